"""On the device machine after a sweep: re-save each trained model without its optimizer state (a third of the
bytes of an Adam-trained file) so that it fits the transfer back; large files are split by the caller.
Usage: python3 scripts/device_strip_models.py SRC_DIR DST_DIR"""

import sys
from pathlib import Path

import deltanet

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for path in sorted(src.glob("*.keras")):
    model = deltanet.load_model(path, compile=False)
    out = dst / path.name.replace("arch-", "").replace("_size-224_width-1.0_epochs-20", "")
    model.save(out)
    print(out.name, out.stat().st_size // 2**20, "MiB")
