"""nndk's ONNX bridge: export a bundle's Program as ONNX, import an ONNX graph as equations.

Needs the ``onnx`` extra; the runtime (nnre) never imports onnx. Modules, in pipeline order:
``common`` (errors, tables), ``export`` (Program → ONNX), ``expr`` (readable equation text),
``values``/``graph``/``ops``/``recurrent`` (ONNX → equations + weights), ``conformance`` (ONNX's
own backend node tests run through import + nnre).
"""
