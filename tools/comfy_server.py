"""A real ComfyUI server with this pack installed, on a random-weight SD1.5 checkpoint and a
generated clip (or real ones): used by the integration tier, the browser check, the
workflow builder and the main job.

Nothing here imports ComfyUI: what needs ComfyUI's Python (building the random
checkpoint, writing the test clip, reading a video) runs as a subprocess under
COMFYUI_PYTHON, so the caller may run in the project's own venv.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACK_ROOT = HERE.parent
PACK_NAME = "ComfyUI-VRWKV-Editor"     # the folder users install the pack as (the repository's name)
CHECKPOINTS = {"shallow": "sd15_random_shallow.safetensors", "full": "sd15_random_full.safetensors"}
CONTROLNET_NAME = "controlnet_random_shallow.safetensors"
CLIP_NAME = "vrwkv_test_clip.mp4"
BUILDER_VERSION = "1"     # bump when make_random_sd15.py changes what it writes
CONTROLNET_BUILDER_VERSION = "1"     # bump when make_random_controlnet.py changes what it writes


def comfyui_path() -> Path | None:
    path = os.environ.get("COMFYUI_PATH")
    return Path(path).resolve() if path else None


def comfyui_python() -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for venv in ("venv", ".venv"):
        candidate = comfyui_path() / venv / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return sys.executable


def run_comfy_python(args: list, timeout: float = 900) -> str:
    """Runs a script under ComfyUI's Python with COMFYUI_PATH set; returns its stdout."""
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_path())}
    out = subprocess.run([comfyui_python(), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{out.stderr[-4000:]}")
    return out.stdout


def cache_dir() -> Path:
    path = Path(os.environ.get("VRWKV_TEST_CACHE", Path.home() / ".cache" / "vrwkv-editor-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_checkpoint(depth: str) -> Path:
    """The random SD1.5 checkpoint of that depth, built once (about 10 s shallow, 30 s full)."""
    path = cache_dir() / f"sd15_random_{depth}_v{BUILDER_VERSION}.safetensors"
    if not path.exists():
        run_comfy_python([HERE / "make_random_sd15.py", "--depth", depth, "--out", path])
    return path


def cached_controlnet(depth: str) -> Path:
    """A random ControlNet for the random SD1.5 of that depth, built once (about 10 s shallow)."""
    path = cache_dir() / f"controlnet_random_{depth}_v{CONTROLNET_BUILDER_VERSION}.safetensors"
    if not path.exists():
        run_comfy_python([HERE / "make_random_controlnet.py", "--depth", depth, "--out", path])
    return path


def make_test_clip(path: Path, frames: int = 8, size: int = 64, fps: int = 8) -> Path:
    """An H.264 mp4 of coloured shapes moving across a gradient (written with PyAV)."""
    run_comfy_python([HERE / "video_tools.py", "write", path, frames, size, fps])
    return path


def video_info(path: Path) -> dict:
    """{"frames", "width", "height"} of a video file, decoded with PyAV."""
    return json.loads(run_comfy_python([HERE / "video_tools.py", "info", path]))


def read_latent(server: "ComfyServer", prefix: str):
    """The newest latent SaveLatent wrote as output/latents/<prefix>_NNNNN_.latent (never one
    of a longer prefix that starts with this one)."""
    from safetensors import safe_open
    files = sorted((server.output_dir / "latents").glob(f"{prefix}_{'[0-9]' * 5}_.latent"))
    if not files:
        raise FileNotFoundError(f"no latent saved as latents/{prefix}")
    with safe_open(str(files[-1]), framework="pt") as f:
        return f.get_tensor("latent_tensor")


def extra_node_packs() -> list[Path]:
    """Custom node packs to install beside this one, from VRWKV_EXTRA_NODES: folders holding a
    pack's __init__.py, separated by os.pathsep (e.g. a VideoHelperSuite checkout)."""
    packs = [Path(p).resolve() for p in os.environ.get("VRWKV_EXTRA_NODES", "").split(os.pathsep) if p]
    missing = [str(p) for p in packs if not (p / "__init__.py").is_file()]
    if missing:
        raise FileNotFoundError(f"VRWKV_EXTRA_NODES names folders without a custom node pack's __init__.py: "
                                f"{', '.join(missing)}")
    return packs


def pack_import_errors(log_text: str) -> list[str]:
    """Log lines saying that this pack failed to import."""
    name = PACK_NAME
    return [line for line in log_text.splitlines()
            if ("Cannot import" in line or "IMPORT FAILED" in line) and name in line]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`python main.py` in a throw-away base directory holding this pack (symlinked into
    custom_nodes/ as PACK_NAME, whatever the checkout's folder is called) and any extra node
    packs (under their folders' names), the requested checkpoints and the test clip."""

    def __init__(self, checkpoints=("shallow",), files=None, cpu=True, extra_args=(), clip_frames=8, extra_nodes=()):
        """checkpoints: random ones to install ("shallow", "full"); files: more files to link
        into the base directory, {relative path: source path} (e.g. a real checkpoint);
        cpu: run with --cpu (the default; False lets ComfyUI use the GPU). More server flags
        come from extra_args and the environment's COMFYUI_ARGS (e.g. "--disable-api-nodes").
        clip_frames: length of the generated test clip. extra_nodes: more custom node packs
        (folders) to install, besides those in VRWKV_EXTRA_NODES."""
        self.checkpoints, self.files, self.clip_frames = checkpoints, dict(files or {}), clip_frames
        self.extra_nodes = [Path(p).resolve() for p in extra_nodes] + extra_node_packs()
        self.extra_args = (["--cpu"] if cpu else []) + list(extra_args) + shlex.split(os.environ.get("COMFYUI_ARGS", ""))
        self.client_id = uuid.uuid4().hex

    def __enter__(self):
        self.base_dir = Path(tempfile.mkdtemp(prefix="vrwkv-comfy-"))
        for sub in ("custom_nodes", "models/checkpoints", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True)
        for name, pack in ((PACK_NAME, PACK_ROOT), *((p.name, p) for p in self.extra_nodes)):
            (self.base_dir / "custom_nodes" / name).symlink_to(pack, target_is_directory=True)
        for depth in self.checkpoints:
            (self.base_dir / "models" / "checkpoints" / CHECKPOINTS[depth]).symlink_to(cached_checkpoint(depth))
        for rel, source in self.files.items():
            (self.base_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.base_dir / rel).symlink_to(Path(source).resolve())
        self.input_dir, self.output_dir = self.base_dir / "input", self.base_dir / "output"
        make_test_clip(self.input_dir / CLIP_NAME, frames=self.clip_frames)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "server.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [comfyui_python(), "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
             "--disable-auto-launch", "--base-directory", str(self.base_dir), *self.extra_args],
            cwd=comfyui_path(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while True:
            try:
                self._get("/object_info/CheckpointLoaderSimple")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.time() > deadline:
                    tail = self.log_text()[-4000:]
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"ComfyUI did not start:\n{tail}")
                time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        if not os.environ.get("VRWKV_KEEP_SERVER_DIR"):
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def _post(self, path, payload):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return json.loads(body) if body else {}

    def object_info(self, node_id: str | None = None) -> dict:
        return self._get("/object_info" + (f"/{node_id}" if node_id else ""))

    def has_node(self, node_id: str) -> bool:
        return node_id in self.object_info(node_id)

    def queue(self, graph: dict) -> str:
        """Queues an API-format graph; a graph the server rejects raises with its errors."""
        try:
            return self._post("/prompt", {"prompt": graph, "client_id": self.client_id})["prompt_id"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"ComfyUI rejected the graph: {e.read().decode(errors='replace')}") from None

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """The history entry once the prompt ran; RuntimeError with the node's exception
        (or 'interrupted') if it did not succeed."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self._get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "success":
                    return entry
                for kind, data in status.get("messages", []):
                    if kind == "execution_error":
                        raise RuntimeError(f"{data.get('node_type')}: {data.get('exception_message')}\n"
                                           + "".join(data.get("traceback", [])))
                    if kind == "execution_interrupted":
                        raise RuntimeError(f"execution interrupted at node {data.get('node_type')}")
                raise RuntimeError(f"prompt failed: {status}")
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s\n{self.log_text()[-3000:]}")

    def run(self, graph: dict, timeout: float = 600) -> dict:
        return self.wait(self.queue(graph), timeout)

    def interrupt(self) -> None:
        self._post("/interrupt", {})
