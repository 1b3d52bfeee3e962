"""Hugging Face Space (or local) entry point of the DeltaDiff demo: the shipped default model behind a Gradio page.

    python examples/space/app.py        # http://127.0.0.1:7860 ($GRADIO_SERVER_NAME / $GRADIO_SERVER_PORT to change)

All of it is `diffusers_deltadiff.demo.build_demo`; `deltadiff demo --help` has the same with flags.
"""

from diffusers_deltadiff.demo import build_demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch()
