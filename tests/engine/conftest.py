"""The engine without a server: decoding and encoding, tiling, safe model loading and the registry,
the ncnn importer, the model manager, CPU precision, the face detector's .tflite executor, the
catalog and downloads (against a local HTTP server).
"""
