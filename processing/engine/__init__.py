"""The run-time engine: pixels in, pixels out, no torch.

pipeline.py is ``restore()`` (GFPGANer.enhance reorganised for a small CPU machine);
detectors.py finds faces; networks.py and retinaface.py run the exported graphs on the
runtimes in runtimes.py; store.py reads the exported models; upsampler.py is Real-ESRGAN's
tiling. It knows nothing of storage, HTTP or Functions, and never imports torch: the
build-time tools that make the exports live in processing/checkpoints/.
"""
