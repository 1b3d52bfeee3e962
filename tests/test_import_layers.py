"""The import picture of the package: no circles, and no arrow from a lower room up to a higher one."""

import ast
from pathlib import Path

import diffusers_deltadiff


PACKAGE = Path(diffusers_deltadiff.__file__).parent
# rooms, lowest first: a module may import from its own room or a lower one, never a higher one
LAYERS = [
    {"arguments", "config_checks", "metrics", "pipeline_code", "tiling", "image_utils", "scheduling_delta_shift",
     "unet_local_norm", "autoencoder_space_to_depth", "degradations", "blending", "encoding", "pipeline_output", "canvas", "tiled_execution",
     "upscaler", "baselines", "atomic_files"},
    {"pipeline_deltadiff", "pretrained", "outscale", "data", "testing_utils", "model_card"},
    {"evaluation", "training_utils", "console", "onnx_export", "onnx_backend", "onnx_upscaler"},
    {"image_io"},
    {"demo", "demo_checks", "cli"},
]  # fmt: skip
INFERENCE = {"pipeline_deltadiff", "scheduling_delta_shift", "unet_local_norm", "autoencoder_space_to_depth", "tiling",
             "encoding", "pipeline_output", "canvas", "tiled_execution",
             "image_utils", "pipeline_code", "config_checks"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package modules `path` imports, at the top or inside functions (relative imports resolved)."""
    here = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    if path.name == "__init__.py" and here == [""]:
        here = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [".".join([*target, alias.name]) for alias in node.names] if not node.module else []
                found.add(".".join(target))
                found.update(names)
            elif node.module and node.module.startswith("diffusers_deltadiff"):
                found.add(node.module.removeprefix("diffusers_deltadiff").lstrip("."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("diffusers_deltadiff."):
                    found.add(alias.name.removeprefix("diffusers_deltadiff."))
    return {name for name in found if name}


def graph() -> dict[str, set[str]]:
    modules = {
        module_name(p): p for p in PACKAGE.rglob("*.py") if "pretrained" not in p.parts and p.stem != "__main__"
    }
    modules.pop("", None)
    return {name: {i for i in imports(path) if i in modules and i != name} for name, path in modules.items()}


def room(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_every_module_has_a_room():
    tops = {name.split(".")[0] for name in graph()} - {"custom_pipeline"}
    assert tops <= set().union(*LAYERS), tops - set().union(*LAYERS)


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for target in sorted(edges[node]):
            assert state.get(target) != 1, "import circle: " + " -> ".join([*path, target])
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_no_arrow_runs_up():
    for module, targets in graph().items():
        if module.split(".")[0] == "custom_pipeline":
            continue
        for target in targets:
            assert room(target) <= room(module), (
                f"{module} (room {room(module)}) imports {target} (room {room(target)})"
            )


def test_inference_never_imports_training_or_the_command_line():
    for module, targets in graph().items():
        if module in INFERENCE:
            assert not {t.split(".")[0] for t in targets} & {"training_utils", "data", "cli", "demo", "evaluation"}, (
                module,
                targets,
            )


def test_no_function_takes_more_than_six_positional_parameters():
    """
    Options travel as keywords or in one small object, not threaded through long positional lists. Gradio's
    `progress=gr.Progress()` is not an option: Gradio injects it, and only into a positional parameter.
    """
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = node.args.posonlyargs + node.args.args
                defaults = [None] * (len(params) - len(node.args.defaults)) + node.args.defaults
                injected = {
                    a.arg
                    for a, d in zip(params, defaults)
                    if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "Progress"
                }
                names = [a.arg for a in params if a.arg not in ("self", "cls") and a.arg not in injected]
                assert len(names) <= 6, f"{path.name}: {node.name}({', '.join(names)})"


def test_no_module_is_over_450_lines():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path
