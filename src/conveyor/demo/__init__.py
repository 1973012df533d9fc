"""Ingredients for the `examples/video-process` demo workflow (video -> frames -> face detection).

Everything here works offline: sample pictures come from scikit-image and the encoder is the ffmpeg binary
shipped in the `imageio-ffmpeg` wheel. Those packages are the optional `demo` extra, so the submodules import
them lazily.
"""
