"""Hugging Face Space entry point of fsm-hf (Fast Spatial Memory, 4D reconstruction).

The app itself is ``fsm_hf.space_app`` (installed from the wheel listed in requirements.txt):

    python app.py                                  # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (a Space sets them)
    python app.py --host 127.0.0.1 --port 7860     # locally
    python app.py --builtin-model path/to/folder   # offer another FSMPipeline folder as the built-in model
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry; must be set before gradio is imported
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from fsm_hf.space_app import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
