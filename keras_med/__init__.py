"""keras_med: medical image classification with Keras 3, from files on disk to TF Serving.

Importing the package registers every class a saved keras_med `.keras` file needs, so
`import keras_med; keras.saving.load_model("best.keras")` works (`keras_med.registration`),
without importing Keras before a command has chosen its backend.
"""

from keras_med.registration import register_keras_objects

__version__ = "0.1.0"

register_keras_objects()
