"""Runs example workflow 1 (workflows/vrwkv_edit_video.json) headless in a real ComfyUI:
tune on the clip, invert it, re-render it with the edit prompt, write the video.

    COMFYUI_PATH=~/ComfyUI python tools/edit_video.py                      # built-in demo
    COMFYUI_PATH=~/ComfyUI python tools/edit_video.py --video clip.mp4 \\
        --ckpt ~/ComfyUI/models/checkpoints/v1-5-pruned-emaonly.safetensors \\
        --source "a man skiing" --edit "a panda skiing, van Gogh style" --frames 16 --size 512

Without --video/--ckpt it uses a generated 8-frame 64x64 clip and a random-weight SD1.5
with a few steps: a check that the whole pipeline runs (the "edit" is noise). With a real
checkpoint and the defaults of the workflow (500 tuning steps, 50 DDIM steps) it is the
real edit; use a GPU. The server runs with --cpu unless --gpu is given.
"""

import argparse
import json
import shutil
from pathlib import Path

from comfy_server import CHECKPOINTS, CLIP_NAME, ComfyServer, comfyui_path, video_info
from workflow_api import point_at, set_inputs, ui_to_api

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "vrwkv_edit_video.json"
DEMO = {"frames": 8, "size": 64, "tune_steps": 3, "ddim_steps": 5}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, help="source clip (default: a generated 8-frame clip)")
    ap.add_argument("--ckpt", type=Path, help="SD1.5 checkpoint file (default: random weights)")
    ap.add_argument("--random", choices=sorted(CHECKPOINTS), default="shallow",
                    help="without --ckpt: a random SD1.5 of full depth or the faster shallow one")
    ap.add_argument("--source", default="a man skiing", help="prompt describing the clip")
    ap.add_argument("--edit", default="a panda skiing, van Gogh style", help="prompt of the edit")
    ap.add_argument("--frames", type=int, help="frames to edit, from the start of the clip")
    ap.add_argument("--size", type=int, help="frame width and height in pixels (multiple of 8)")
    ap.add_argument("--tune-steps", type=int)
    ap.add_argument("--ddim-steps", type=int)
    ap.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    ap.add_argument("--out", type=Path, default=ROOT / "output", help="folder for the edited video")
    args = ap.parse_args(argv)
    if comfyui_path() is None:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout")
    demo = args.ckpt is None

    files, ckpt_name, video_name = {}, CHECKPOINTS[args.random], CLIP_NAME
    if args.ckpt:
        ckpt_name = args.ckpt.name
        files[f"models/checkpoints/{ckpt_name}"] = args.ckpt
    if args.video:
        video_name = args.video.name
        files[f"input/{video_name}"] = args.video
    shrink = {key: getattr(args, key) if getattr(args, key) is not None else (DEMO[key] if demo else None)
              for key in DEMO}

    clip_frames = max(DEMO["frames"], shrink["frames"] or 0)     # the generated clip holds what --frames asks
    with ComfyServer(checkpoints=(args.random,) if demo else (), files=files, cpu=not args.gpu,
                     clip_frames=clip_frames) as server:
        graph = ui_to_api(json.loads(WORKFLOW.read_text()), server.object_info())
        point_at(graph, ckpt_name, video_name, **shrink)
        set_inputs(graph, {"Source prompt (what the clip shows)": {"text": args.source}, "Edit prompt": {"text": args.edit},
                           "VRWKVTuneOnVideo": {"note": args.source, "save_name": ""},
                           "VRWKVDDIMInversion": {"mode": "invert"}})
        print(f"running {WORKFLOW.name} on {video_name} with {ckpt_name} ...", flush=True)
        server.run(graph, timeout=24 * 3600)
        videos = sorted((server.output_dir / "video").glob("vrwkv_edit*"))
        args.out.mkdir(parents=True, exist_ok=True)
        out = next(p for n in range(1, 100000)
                   if not (p := args.out / f"vrwkv_edit_{n:05}{videos[-1].suffix}").exists())  # never overwrite
        shutil.copy(videos[-1], out)
    info = video_info(out)
    print(f"wrote {out}: {info['frames']} frames of {info['width']}x{info['height']}")
    if shrink["frames"] and info["frames"] < shrink["frames"]:
        print(f"note: the clip holds only {info['frames']} of the {shrink['frames']} frames asked for; "
              "pass a longer --video or fewer --frames")


if __name__ == "__main__":
    main()
