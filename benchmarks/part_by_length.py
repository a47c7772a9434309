"""difphys's ParT on real padded jets, random batches against the same jets grouped by length
(``train.predict``'s ``by_length`` for the forward pass, ``io.batches(..., bucket=)`` for
training), in one process.

Both sides cut every batch with ``io.trim_padding`` (``--trim``; training batches also to a
random 90-102% quantile of the jet lengths, as weaver-core does). The two variants take turns
over ``--rounds`` rounds; one JSON line per size and mode with both medians, the speed-up
(median of per-round ratios) and each side's batch lengths.

    python benchmarks/part_by_length.py --data zpole.root [--cycle 16] [--sizes full,small]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from part_throughput import _median_time, _real_batches, setup_difphys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="JetClass-schema ROOT file")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--cycle", type=int, default=16, help="batches per timed call")
    parser.add_argument("--trim", type=int, default=8)
    parser.add_argument("--sizes", default="full,small")
    parser.add_argument("--modes", default="forward,train_step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    data = _real_batches(args.data, args.batch, args.particles, args.cycle)
    for size in args.sizes.split(","):
        impls = {grouped: setup_difphys(size, data, args.trim, (0.9, 1.02), grouped)
                 for grouped in (False, True)}
        for mode in args.modes.split(","):
            per = {grouped: [] for grouped in impls}
            for r in range(args.rounds):
                for grouped in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
                    time.sleep(0.3)
                    per[grouped].append(_median_time(impls[grouped][0][mode], args.warmup,
                                                     args.steps))
            lengths = "lengths_forward" if mode == "forward" else "lengths_train"
            print(json.dumps(dict(
                data=args.data, batch=args.batch, batches_per_call=args.cycle, size=size,
                mode=mode, random_s=statistics.median(per[False]),
                by_length_s=statistics.median(per[True]),
                speedup=statistics.median([a / b for a, b in zip(per[False], per[True],
                                                                 strict=True)]),
                lengths_random=impls[False][1][lengths],
                lengths_by_length=impls[True][1][lengths])), flush=True)


if __name__ == "__main__":
    main()
