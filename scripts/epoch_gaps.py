# Diagnostic (session 8): per-epoch timing of training.fit, locating the ~10 s gaps. python scripts/epoch_gaps.py [fit args]
import sys, time, json
from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training.fit as fit
orig = fit._checkpoint_callback
def patched(ckpt_dir, cfg):
    import keras
    inner = orig(ckpt_dir, cfg)
    class Timing(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model); inner.set_model(model)
        def on_epoch_begin(self, e, logs=None):
            self.t0 = time.perf_counter(); self.bt = []; self.last = self.t0
        def on_train_batch_end(self, b, logs=None):
            t = time.perf_counter(); self.bt.append(t - self.last); self.last = t
            import faulthandler
            if b == 69: faulthandler.dump_traceback_later(4, repeat=False)
        def on_test_begin(self, logs=None):
            import faulthandler; faulthandler.cancel_dump_traceback_later(); self.tt = time.perf_counter(); self.gap1 = self.tt - self.last
        def on_test_end(self, logs=None):
            self.te = time.perf_counter(); self.tv = self.te - self.tt
        def on_epoch_end(self, e, logs=None):
            t = time.perf_counter(); gap2 = t - self.te; inner.on_epoch_end(e, logs); tc = time.perf_counter() - t
            bt = sorted(self.bt)
            print(json.dumps(dict(epoch=e, total=round(time.perf_counter()-self.t0,2), train=round(sum(self.bt),2),
                  max_batch=round(bt[-1],2), top3=[round(x,2) for x in bt[-3:]], median=round(bt[len(bt)//2],3), val=round(self.tv,2), ckpt=round(tc,2), gap_train_to_val=round(self.gap1,2), gap_val_to_end=round(gap2,2), first=round(self.bt[0],2))), file=sys.stderr, flush=True)
    return Timing()
fit._checkpoint_callback = patched
sys.argv = ["fit", "--epochs", "6", "--out", "/tmp/diag/run"] + sys.argv[1:]
fit.main()
