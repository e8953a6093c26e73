"""Explanations: Grad-CAM and Grad-CAM++ (tf-keras-vis) on the feature map the model names."""

from keras_med.explain.files import explain_files
from keras_med.explain.gradcam import compute_gradcam
from keras_med.explain.overlay import blend_heatmap, save_overlay, save_overlays
from keras_med.models.features import feature_map_layer_name

__all__ = ["compute_gradcam", "explain_files", "feature_map_layer_name", "blend_heatmap", "save_overlay",
           "save_overlays"]
