"""Speed and memory of minidiff against diffusers on the Stable Diffusion 1.5 architecture, in one run.

Both libraries build the SD 1.5-size U-Net, VAE and text encoder; one set of random weights is copied into both,
key for key. Every workload is run in several variants of each library (eager, channels-last, fused q/k/v, a
CUDA graph, torch.compile), and each variant reports its median time, its peak memory (above the weights; on
CUDA only) and its output error against a float32 reference (diffusers/transformers in float32, TF32 off).
Workloads: the U-Net step at several batch sizes and resolutions, the VAE decoder at 512 px, the text encoder on
[unconditional; conditional] prompts, and a whole 50-step guided text-to-image run (Euler; text encoding +
sampling + VAE decoding; tokenizing left out).

    configs.py        the architectures (SD 1.5's, tiny ones), random weights, minidiff copies of the references
    timing.py         timers, peak memory, errors, kernel times, FLOPs, the matmul rate; the settings measured under
    workloads.py      one function per workload, returning its rows
    text_to_image.py  the whole run, in each library
    report.py         rows, environment, tables, JSON
    run.py            run_benchmark: the entry point of ``python -m minidiff bench``

diffusers and transformers are imported only inside functions: they are the reference, never a dependency of
the rest of minidiff. See lessons/12-performance.md and benchmarks/README.md.
"""
