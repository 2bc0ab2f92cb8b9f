"""Pipelines that turn captions into images and images into captions (`DiffusionPipeline`s)."""

from .text_image import ImageToTextPipeline, ImageToTextPipelineOutput, TextToImagePipeline, TextToImagePipelineOutput


__all__ = ["ImageToTextPipeline", "ImageToTextPipelineOutput", "TextToImagePipeline", "TextToImagePipelineOutput"]
