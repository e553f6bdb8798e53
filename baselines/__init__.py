"""The peers the pack is measured against, as patches of an SD1.5-layout UNet: Tune-A-Video
(tune_a_video.py), used by the toy world's methods and by the benchmarks."""
