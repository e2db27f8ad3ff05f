"""Both backends have the same file for the same job (file names only: no framework is imported)."""

from pathlib import Path

BACKENDS = Path(__file__).resolve().parents[1] / "backends"
PACKAGES = {"torch": BACKENDS / "torch" / "distill_engine_torch",
            "mindspore": BACKENDS / "mindspore" / "distill_engine_mindspore"}

# Modules one backend has and the other has no need of, with the reason (each package's docstring
# says the same).
ONLY_IN = {
    "torch": {
        # BertAdam as a torch.optim.Optimizer; MindSpore's AdamW/BertAdam update is ops inside trainer.py
        "optim.py",
    },
    "mindspore": {
        # C++ CPU kernels for MindSpore's slow element-wise CPU ops (torch's are fast)
        "fused.py",
        # the MindSpore model zoo's parameter names (torch reads Hugging Face names, mapped by the core)
        "zoo_names.py",
    },
}


def _modules(package: Path) -> set[str]:
    return {p.name for p in package.glob("*.py")}


def test_the_backends_have_the_same_module_files():
    shared = {name: _modules(path) - ONLY_IN[name] for name, path in PACKAGES.items()}
    assert shared["torch"] == shared["mindspore"], (
        f"only in torch: {sorted(shared['torch'] - shared['mindspore'])}; "
        f"only in mindspore: {sorted(shared['mindspore'] - shared['torch'])} "
        "(give the other backend the same file, or add it to ONLY_IN with the reason)")


def test_the_allow_list_is_current_and_documented():
    for name, path in PACKAGES.items():
        present = _modules(path)
        docstring = (path / "__init__.py").read_text(encoding="utf-8")
        for module in ONLY_IN[name]:
            assert module in present, f"{name}: {module} is in ONLY_IN but not in {path}"
            assert f"`{module[:-3]}`" in docstring, f"{name}: the package docstring does not say why it has {module}"
