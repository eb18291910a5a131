"""How a request carries its images and options: a multipart upload or base64 in JSON, and the
/detect query parameters (module level: FastAPI resolves the annotations)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import HTTPException, Query, Request, UploadFile
from pydantic import BaseModel, Field


class ImagePayload(BaseModel):
    image: str = Field(description="base64-encoded image file (PNG, JPEG, ...)")


class BatchPayload(BaseModel):
    images: list[str] = Field(description="base64-encoded image files")


def b64_bytes(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise HTTPException(400, f"{what}: not valid base64 ({err})") from err


MethodQuery = Annotated[str, Query(pattern="^(contours|sliding_window|selective_search)$",
                                   description="region proposals")]
ConfidenceQuery = Annotated[float, Query(ge=0.0, le=1.0, description=(
    "lowest class probability kept (default geojax.SHAPE_THRESHOLD)"))]
IouQuery = Annotated[float, Query(gt=0.0, le=1.0, description=(
    "same-class boxes overlapping more are suppressed"))]
ClassesQuery = Annotated[str | None, Query(description=(
    "comma-separated class names to keep, e.g. circle,star (default: all)"))]
MaxQuery = Annotated[int | None, Query(ge=1, description=(
    "keep at most this many, the most confident (default: all)"))]
BoxQuery = Annotated[str, Query(pattern="^(xyxy|xywh|normalized)$", description=(
    "xyxy: [x0, y0, x1, y1] px; xywh: [x, y, w, h] px; normalized: xyxy over the size"))]
FormatQuery = Annotated[str, Query(pattern="^(json|coco)$", description=(
    "json: this API's answer; coco: a list of COCO results entries (image_id, "
    "category_id = label + 1, bbox [x, y, w, h], score)"))]
ImageIdQuery = Annotated[int, Query(ge=0, description=(
    "format=coco: the image_id of the (first) image"))]


async def one_image(request: Request, file: UploadFile | None) -> tuple[bytes, str]:
    """The image of a request: a multipart `file` field or JSON {"image": base64}."""
    if file is not None:
        return await file.read(), file.filename or "upload"
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            payload = ImagePayload.model_validate(await request.json())
        except (ValueError, json.JSONDecodeError) as err:
            raise HTTPException(422, f"expected JSON {{\"image\": base64}}: {err}") from err
        return b64_bytes(payload.image, "image"), "image"
    raise HTTPException(400, "send the image as multipart field 'file' or JSON "
                             "{\"image\": \"<base64>\"}")
