"""Explanations: Grad-CAM and Grad-CAM++ (tf-keras-vis) on the last convolutional block."""

from keras_med.explain.files import explain_files
from keras_med.explain.gradcam import compute_gradcam, find_last_conv_layer
from keras_med.explain.overlay import blend_heatmap, save_overlay, save_overlays

__all__ = ["compute_gradcam", "explain_files", "find_last_conv_layer", "blend_heatmap", "save_overlay",
           "save_overlays"]
