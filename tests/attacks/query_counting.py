"""A query counter for the black-box attack tests (TensorFlow backend)."""


def tf_counting(fn):
    """`fn` wrapped to count the images the attack queries (a tf.Variable:
    traced calls count too)."""
    import tensorflow as tf

    class Counting:
        def __init__(self):
            self.images = tf.Variable(0, dtype=tf.int64)

        @tf.autograph.experimental.do_not_convert
        def __call__(self, x):
            self.images.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
            return fn(x)

    return Counting()
