"""Finetune an FSM model with Accelerate.

    accelerate launch finetune.py --config configs/tiny_cpu.yaml --data synthetic:8 --output_dir runs/tiny
    accelerate launch --multi_gpu --num_processes 2 finetune.py --config configs/fsm_4d_lvsm_finetune.yaml \
        --model path/to/pipeline --data scenes/:1 --output_dir runs/ft --resume

Flags override the YAML config; see ``python finetune.py --help`` and ``fsm_hf.training``.
"""

import sys

from fsm_hf.training import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
