"""One convolution's training step (forward, loss, gradient of the kernel) on TensorFlow and on JAX, CPU.

    JAX_PLATFORMS=cpu python benchmarks/conv_backends.py tf|jax dense|depthwise

A (32, 64, 64, 32) batch, a 3x3 kernel: dense (32 -> 32 channels) or depthwise (MobileNetV2's kind).
Shows where Keras on JAX loses on a CPU: which of the two convolution kinds is slower there than on TensorFlow.
"""
import os, sys, time
which = sys.argv[1]; kind = sys.argv[2]
shape = (32, 64, 64, 32)
if which == "jax":
    import jax, jax.numpy as jnp
    from jax import lax
    x = jnp.ones(shape); w = jnp.ones((3, 3, 32, 32)) if kind == "dense" else jnp.ones((3, 3, 1, 32))
    def loss(w, x):
        return jnp.mean(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                 feature_group_count=1 if kind == "dense" else 32) ** 2)
    g = jax.jit(jax.grad(loss)); run = lambda: jax.block_until_ready(g(w, x))
else:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    x = tf.ones(shape); w = tf.Variable(tf.ones((3, 3, 32, 32)) if kind == "dense" else tf.ones((3, 3, 32, 1)))
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(x, w, 1, "SAME") if kind == "dense" else tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME")
            l = tf.reduce_mean(y ** 2)
        return tape.gradient(l, w)
    run = lambda: step().numpy()
run()
t = time.perf_counter()
for _ in range(10): run()
print(which, kind, f"{(time.perf_counter() - t) / 10 * 1000:.1f} ms/step")
