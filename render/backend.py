"""The one module that talks to pyrender/OpenGL: platform choice, a reusable scene renderer, render workers.

pyrender is imported lazily, inside functions, because PYOPENGL_PLATFORM must be set before the
first OpenGL import and a process cannot switch platforms afterwards. Rendering therefore always
happens in processes started by spawn: each picks the platform, imports pyrender and builds one
renderer that it reuses for every sequence it is given.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata

import numpy as np

from ibutil.errors import UserError
from render.objects import render_mesh
from render.scene import CameraSpec, SceneSpec, camera_pose, light_pose

PLATFORMS = ("egl", "osmesa")  # tried in this order unless PYOPENGL_PLATFORM is set
INSTALL_HINT = ("install the Debian/Ubuntu packages libegl1 and libgl1-mesa-dri (EGL), "
                "or libosmesa6 (the OSMesa fallback): sudo apt-get install libegl1 libgl1-mesa-dri libosmesa6")


# ----------------------------------------------------------------------------- image maths (no GL)


def box_downsample(image: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks: (kH, kW, C) uint8 -> (H, W, C) uint8, rounded to nearest."""
    if k == 1:
        return image
    h, w, c = image.shape[0] // k, image.shape[1] // k, image.shape[2]
    blocks = image.reshape(h, k, w, k, c).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def majority_downsample(labels: np.ndarray, k: int, n_objects: int) -> np.ndarray:
    """Per k x k block, the label covering most subsamples (ties to the lower label): (kH, kW) -> (H, W)."""
    if k == 1:
        return labels.astype(np.uint8)
    h, w = labels.shape[0] // k, labels.shape[1] // k
    blocks = labels.reshape(h, k, w, k)
    counts = np.stack([(blocks == lab).sum(axis=(1, 3)) for lab in range(n_objects + 1)])  # (K+1, H, W)
    return counts.argmax(axis=0).astype(np.uint8)


# ----------------------------------------------------------------------------- pyrender


def _import_pyrender(platform: str, msaa: bool = False):
    """Set the GL platform, import pyrender and (unless `msaa`) turn off its hard-coded 4x MSAA.

    We anti-alias by supersampling instead; MSAA costs about 2-3x per frame on llvmpipe and
    would blur masks against colours differently. pyrender creates its multisample
    renderbuffers through this module-level name, so a 0-sample request gives plain buffers
    (see docs/pyrender.md).
    """
    os.environ["PYOPENGL_PLATFORM"] = platform
    import pyrender
    import pyrender.renderer
    from OpenGL import GL

    if msaa:
        return pyrender

    def storage_without_msaa(target, _samples, internal_format, width, height):
        GL.glRenderbufferStorageMultisample(target, 0, internal_format, width, height)

    pyrender.renderer.glRenderbufferStorageMultisample = storage_without_msaa
    return pyrender


class SceneRenderer:
    """One pyrender scene and offscreen renderer, reused for every frame; poses move the nodes."""

    def __init__(self, spec: SceneSpec, size: int, supersample: int, platform: str, msaa: bool = False):
        # msaa=True keeps pyrender's stock 4x MSAA for the whole process (benchmarks/tools/render_speed.py's
        # naive loop); datasets never use it.
        pyrender = self._pyrender = _import_pyrender(platform, msaa)
        self.size, self.k = size, supersample
        self.scene = pyrender.Scene(bg_color=[*spec.background, 1.0], ambient_light=[spec.ambient] * 3)
        self.nodes = []
        for obj in spec.objects:
            material = pyrender.MetallicRoughnessMaterial(
                baseColorFactor=(*obj.colour, 1.0), metallicFactor=0.0, roughnessFactor=0.7)
            mesh = pyrender.Mesh.from_trimesh(render_mesh(obj.name), material=material, smooth=True)
            self.nodes.append(self.scene.add(mesh))
        cam = spec.camera
        if cam.kind == "perspective":
            camera = pyrender.PerspectiveCamera(yfov=np.deg2rad(cam.yfov_deg), znear=cam.znear,
                                                zfar=cam.zfar, aspectRatio=1.0)
        else:
            camera = pyrender.OrthographicCamera(xmag=cam.half_extent, ymag=cam.half_extent, znear=cam.znear,
                                                 zfar=cam.zfar)
        self.scene.add(camera, pose=camera_pose(cam))
        light = pyrender.DirectionalLight(color=np.ones(3), intensity=spec.light_intensity)
        self.scene.add(light, pose=light_pose(spec.light_direction))
        self.renderer = pyrender.OffscreenRenderer(size * supersample, size * supersample)
        # Segmentation colour (k, k, k) for object k, so the red channel is the mask label.
        self.seg_map = {node: (k + 1,) * 3 for k, node in enumerate(self.nodes)}

    def render(self, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render one sequence: poses (T, K, 4, 4) -> frames (T, H, W, 3) uint8, masks (T, H, W) uint8."""
        n_frames, n_objects = poses.shape[:2]
        frames = np.empty((n_frames, self.size, self.size, 3), np.uint8)
        masks = np.empty((n_frames, self.size, self.size), np.uint8)
        seg_flag = self._pyrender.RenderFlags.SEG
        for t in range(n_frames):
            for node, pose in zip(self.nodes, poses[t]):
                self.scene.set_pose(node, pose)
            color, depth = self.renderer.render(self.scene)  # (kH, kW, 3) uint8, (kH, kW) float 0 = empty
            if n_objects == 1:
                labels = (depth > 0).astype(np.uint8)  # one object: coverage is the depth test, no second pass
            else:
                seg, _ = self.renderer.render(self.scene, seg_flag, seg_node_map=self.seg_map)
                labels = seg[..., 0]  # occlusion resolved by the depth test
            frames[t] = box_downsample(color, self.k)
            masks[t] = majority_downsample(labels, self.k, n_objects)
        return frames, masks

    def renderer_info(self) -> dict[str, str]:
        """GL platform and renderer strings plus the pyrender distribution in use."""
        from OpenGL import GL

        return {
            "platform": os.environ["PYOPENGL_PLATFORM"],
            "pyrender": _pyrender_distribution(),
            "gl_renderer": GL.glGetString(GL.GL_RENDERER).decode(),
            "gl_version": GL.glGetString(GL.GL_VERSION).decode(),
        }


def _pyrender_distribution() -> str:
    for dist in ("pyrender2", "pyrender"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


# ----------------------------------------------------------------------------- processes

# The renderer of this worker process (set by _init_worker). Module state is how a process pool
# hands each worker a long-lived object; the main process never sets it.
_WORKER: SceneRenderer | None = None


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5  # how often a worker checks that its parent is alive (where prctl is not available)


def watch_parent(parent: int) -> None:
    """Make this worker process belong to `parent`: it ends when `parent` dies, whatever killed it (SIGKILL
    included), and leaves SIGINT and SIGTERM to `parent`, which stops and kills its workers itself.

    On Linux the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); everywhere a
    daemon thread also polls the parent pid, which also covers a parent that died before prctl ran.
    Ignoring the stop signals matters because Ctrl-C reaches the whole process group and a
    scheduler's SIGTERM often does too: a worker dying on its own would surface in the parent as a
    broken pool instead of the parent's own orderly stop.
    """
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the polling thread still covers it

    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=poll, name="watch-parent", daemon=True).start()


def _init_worker(spec: SceneSpec, size: int, supersample: int, platform: str, lp_threads: int, parent: int) -> None:
    global _WORKER
    watch_parent(parent)
    if lp_threads:
        os.environ.setdefault("LP_NUM_THREADS", str(lp_threads))
    _WORKER = SceneRenderer(spec, size, supersample, platform)


def render_task(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render one sequence in a pool worker: poses (T, K, 4, 4) -> (frames, masks)."""
    return _WORKER.render(poses)


def _probe(platform: str) -> dict[str, str]:
    spec = SceneSpec(objects=(), camera=CameraSpec("orthographic", distance=2.0))
    renderer = SceneRenderer(spec, 8, 1, platform)
    renderer.render(np.zeros((1, 0, 4, 4)))
    return renderer.renderer_info()


def probe_platform() -> dict[str, str]:
    """Find a working headless GL platform in a throw-away spawned process; UserError if none works.

    Honours PYOPENGL_PLATFORM when it is set; otherwise tries EGL, then OSMesa.
    """
    chosen = os.environ.get("PYOPENGL_PLATFORM")
    candidates = (chosen,) if chosen else PLATFORMS
    failures = []
    for platform in candidates:
        with RenderPool(1, mp_context=multiprocessing.get_context("spawn"), initializer=watch_parent,
                        initargs=(os.getpid(),)) as pool:
            try:
                return pool.submit(_probe, platform).result(timeout=120)
            except Exception as exc:  # noqa: BLE001 - any failure means "this platform does not work"
                failures.append(f"{platform}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
    raise UserError(f"no headless OpenGL platform works ({'; '.join(failures)}); {INSTALL_HINT}")


class RenderPool(ProcessPoolExecutor):
    """A pool of spawned worker processes that, left on an exception (an error, a stop signal), kills its
    workers instead of waiting for them to finish work nobody will read; on success it shuts down as usual."""

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.kill_workers()
        return super().__exit__(exc_type, exc, tb)

    def kill_workers(self) -> None:
        """Kill every worker (SIGKILL: they ignore SIGINT and SIGTERM), cancel the queued work and wait for
        the pool's manager thread to reap them."""
        for process in list((self._processes or {}).values()):  # the executor's own worker table
            process.kill()
        self.shutdown(wait=True, cancel_futures=True)


def render_pool(spec: SceneSpec, size: int, supersample: int, platform: str, workers: int) -> RenderPool:
    """A pool of `workers` spawned processes, each holding one SceneRenderer; map `render_task` over it.

    Use it as a context manager: on an exception its workers are killed (they also die with this process)."""
    # With several workers on few cores, llvmpipe's own raster threads only contend with each other.
    lp_threads = 1 if workers > 1 else 0
    return RenderPool(workers, mp_context=multiprocessing.get_context("spawn"),
                      initializer=_init_worker, initargs=(spec, size, supersample, platform, lp_threads, os.getpid()))
