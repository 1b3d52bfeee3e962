"""`deltadiff demo`: the Gradio demo (`diffusers_deltadiff.demo`), which parses its own flags."""

from ..console import error, one_line


def add_parser(sub):
    # listed for --help; `main` hands `deltadiff demo ...` to the demo's own parser (see `deltadiff demo --help`)
    sub.add_parser("demo", help="open the Gradio demo in a browser (pip install 'diffusers-deltadiff[demo]')")


def run_demo(argv: list[str]) -> int:
    """`deltadiff demo [...]`: the Gradio demo (`diffusers_deltadiff.demo`), which parses its own flags."""
    try:
        from .. import demo
    except ImportError as err:
        error(f"the demo needs Gradio ({one_line(err)}): pip install 'diffusers-deltadiff[demo]'")
        return 2
    try:
        return demo.main(argv)
    except SystemExit as exit:  # a flag error (2) or --help (0)
        return exit.code
