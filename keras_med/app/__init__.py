"""A web page (Gradio) to try a served model on one's own images: answer, heat map, warnings, model card.

`keras-med app --model saved_models/ham10000` (newest version) or `--server http://HOST:8501 --name ham10000`.
The page asks the model's `explain` signature once per image, so a local SavedModel and a remote
TF Serving give the same page (`keras_med.app.source`, `keras_med.app.analysis`, `keras_med.app.page`).
"""
