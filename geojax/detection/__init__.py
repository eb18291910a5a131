"""Finding every shape in an image: region proposals, crops framed like the training images, one
batched classification, non-maximum suppression, and the detection metrics.

    proposals  geojax.detection.proposals  contours, sliding windows, selective search
    crops      geojax.detection.crops      each region framed as training frames a shape
    boxes      geojax.detection.boxes      IoU, non-maximum suppression
    detect     geojax.detection.detect     detect / detect_batch (prepare + finish)
    drawing    geojax.detection.drawing    boxes and labels drawn on the image
    scoring    geojax.detection.scoring    matching, precision/recall, AP, mAP

Pure numpy and OpenCV: nothing here imports JAX or TensorFlow (the proxy is built on it).
"""
