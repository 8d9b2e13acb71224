"""pytest fixtures for your own CI: cloud emulators hosting a tiny model, and backends wired to them.

This module is a registered pytest plugin (entry point `pytest11`): installing derm-cloud makes the fixtures
available in every pytest session, with no `conftest.py` line (the `emulators` extra and the cloud's own
extra bring what the emulators and backends import when a test asks for them):

```python
def test_my_app_survives_throttling(sagemaker_emulator, sagemaker_classifier):
    from derm_cloud.testing.emulators.base import Fault
    sagemaker_emulator.inject(Fault("throttle", times=1, retry_after=0.1))
    assert sagemaker_classifier.predict("lesion.jpg").label is not None
```

An existing `pytest_plugins = ["derm_cloud.testing.fixtures"]` line keeps working (the plugin is registered
under that name, so it is not loaded twice); `-p no:derm_cloud.testing.fixtures` turns it off.

Each emulator fixture hosts `derm_model_dir` (a tiny seeded ONNX classifier built at test time; override the
fixture to host a real model) and is reset (recorded requests, pending faults) before each test. Nothing starts
until a test asks for a fixture.

When pytest-asyncio is installed and your project does not set `asyncio_default_fixture_loop_scope`, the
plugin sets its default to `"function"` (the default pytest-asyncio announces), so that a project that merely
installs derm-cloud's test tools does not get pytest-asyncio's configuration deprecation warning. A value you set
in your own configuration always wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from derm_cloud.base import Classifier

_LOOP_SCOPE_OPTION = "asyncio_default_fixture_loop_scope"
# The parser of each running pytest session, kept from pytest_addoption until pytest_configure needs it.
_parsers: dict[int, pytest.Parser] = {}


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Remember the session's parser: `pytest_configure` may give an ini option a default."""
    _parsers[id(pluginmanager)] = parser


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Default pytest-asyncio's fixture loop scope to `"function"` when the project leaves it unset.

    Runs before pytest-asyncio's own `pytest_configure`, which warns (an error under `-W error`) when the
    option has no value. Registering the option again only changes its default; a configured value still wins.
    """
    parser = _parsers.pop(id(config.pluginmanager), None)
    if parser is None or not config.pluginmanager.hasplugin("asyncio"):
        return
    parser.addini(
        _LOOP_SCOPE_OPTION,
        "default scope of the asyncio event loop used to execute async fixtures (derm-cloud default: function)",
        type="string",
        default="function",
    )


@pytest.fixture(scope="session")
def derm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model every emulator hosts: a tiny classifier over the 7 HAM10000 classes (not a lesion model)."""
    from derm_cloud.testing.tiny_models import build_tiny_onnx_model

    return build_tiny_onnx_model(tmp_path_factory.mktemp("derm-cloud") / "tiny-onnx")


def _emulator(kind: str, model_dir: Path | None, **options: Any) -> Any:
    from derm_cloud.testing.launch import start

    return start(kind, model_dir, options=options, transport=options.pop("transport", None))


def _session_emulator(kind: str, request: pytest.FixtureRequest, **options: Any) -> Iterator[Any]:
    model_dir = None if kind == "google-vision" else request.getfixturevalue("derm_model_dir")
    emu = _emulator(kind, model_dir, **options)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def _sagemaker_emulator_session(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from _session_emulator("sagemaker", request, endpoint_name="derm-cloud")


@pytest.fixture(scope="session")
def _azure_ml_emulator_session(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from _session_emulator("azure-ml", request)


@pytest.fixture(scope="session")
def _custom_vision_emulator_session(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from _session_emulator("azure-custom-vision", request)


@pytest.fixture(scope="session")
def _vertex_emulator_session(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from _session_emulator("vertex", request)


def _fresh(emu: Any) -> Any:
    emu.reset()
    return emu


@pytest.fixture
def sagemaker_emulator(_sagemaker_emulator_session: Any) -> Any:
    """SageMaker runtime emulator with endpoint `derm-cloud` (derm-cloud adapter response format)."""
    return _fresh(_sagemaker_emulator_session)


@pytest.fixture
def azure_ml_emulator(_azure_ml_emulator_session: Any) -> Any:
    """Azure ML managed online endpoint emulator (scoring + management routes)."""
    return _fresh(_azure_ml_emulator_session)


@pytest.fixture
def custom_vision_emulator(_custom_vision_emulator_session: Any) -> Any:
    """Azure Custom Vision prediction emulator."""
    return _fresh(_custom_vision_emulator_session)


@pytest.fixture
def vertex_emulator(_vertex_emulator_session: Any) -> Any:
    """Vertex AI prediction emulator (REST; AutoML image classification schema)."""
    return _fresh(_vertex_emulator_session)


def _backend(kind: str, emu: Any) -> Iterator[Classifier]:
    from derm_cloud.testing.launch import build_local

    options = {"endpoint_name": "derm-cloud"} if kind == "sagemaker" else {}
    with build_local(kind, emu, options) as clf:
        yield clf


@pytest.fixture
def sagemaker_classifier(sagemaker_emulator: Any) -> Iterator[Classifier]:
    """The `sagemaker` backend (real boto3 client) pointed at `sagemaker_emulator`."""
    yield from _backend("sagemaker", sagemaker_emulator)


@pytest.fixture
def azure_ml_classifier(azure_ml_emulator: Any) -> Iterator[Classifier]:
    """The `azure-ml` backend pointed at `azure_ml_emulator`."""
    yield from _backend("azure-ml", azure_ml_emulator)


@pytest.fixture
def custom_vision_classifier(custom_vision_emulator: Any) -> Iterator[Classifier]:
    """The `azure-custom-vision` backend (real msrest client) pointed at `custom_vision_emulator`."""
    yield from _backend("azure-custom-vision", custom_vision_emulator)


@pytest.fixture
def vertex_classifier(vertex_emulator: Any) -> Iterator[Classifier]:
    """The `vertex` backend (real GAPIC REST client) pointed at `vertex_emulator`."""
    yield from _backend("vertex", vertex_emulator)
