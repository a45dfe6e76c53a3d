// DeltaActivation's training fast path as two TensorFlow CPU ops.
//
// The ops hold no arithmetic of their own: each clip is handed to the numba kernels of
// ops/threshold_clip.py (_forward_clip, _backward_clip) through the C entry points that
// ops.threshold_clip.clip_cfuncs() compiles, so the threshold recursion keeps one definition.
// What the ops add is what tf.numpy_function cannot: no Python and no GIL per call, outputs
// from TensorFlow's allocator, and the clips shared out over TensorFlow's intra-op threads.
// Built and loaded by deltanet/native_op.py (docs/training_speed.md, "Session 12").
#include <atomic>
#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using ForwardFn = void (*)(const float*, const float*, float*, int64_t, int64_t, double*);
using BackwardFn = void (*)(const float*, const float*, float*, int64_t, int64_t, float, float);

std::atomic<ForwardFn> forward_fn{nullptr};
std::atomic<BackwardFn> backward_fn{nullptr};

}  // namespace

// Called once per process (ctypes) with the addresses of the numba cfuncs.
extern "C" void deltanet_set_threshold_clip_kernels(void* forward, void* backward) {
  forward_fn.store(reinterpret_cast<ForwardFn>(forward));
  backward_fn.store(reinterpret_cast<BackwardFn>(backward));
}

namespace tensorflow {

REGISTER_OP("DeltanetThresholdClipForward")
    .Input("x: float")
    .Input("theta: float")
    .Output("y: float")
    .Output("stats: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->Vector(4));
      return absl::OkStatus();
    })
    .Doc("x: (N, T, ..., C) float32, theta: (C,). y: the references; stats: sum|d|, sum d^2, "
         "non-zero d, non-zero y (ops.threshold_clip.threshold_clip_forward).");

REGISTER_OP("DeltanetThresholdClipBackward")
    .Input("y: float")
    .Input("g_y: float")
    .Input("g_l1: float")
    .Input("g_l2: float")
    .Output("g_x: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    })
    .Doc("The gradient of DeltanetThresholdClipForward (ops.threshold_clip.threshold_clip_backward).");

namespace {

// Clips per shard: one clip's pass costs about its bytes; Shard splits the N clips in ranges.
void for_each_clip(OpKernelContext* ctx, int64_t n, int64_t clip_bytes, const std::function<void(int64_t, int64_t)>& fn) {
  const auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  Shard(workers->num_threads, workers->workers, n, clip_bytes, fn);
}

// (N, T, E): clips, frames, elements per frame of a (N, T, ..., C) tensor; false if it has fewer than min_dims dims
bool clip_dims(const Tensor& x, int min_dims, int64_t* n, int64_t* t, int64_t* e) {
  if (x.dims() < min_dims) return false;
  *n = x.dim_size(0);
  *t = x.dim_size(1);
  *e = (*n) * (*t) == 0 ? 0 : x.NumElements() / ((*n) * (*t));
  return true;
}

}  // namespace

class ThresholdClipForwardOp : public OpKernel {
 public:
  explicit ThresholdClipForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    ForwardFn kernel = forward_fn.load();
    OP_REQUIRES(ctx, kernel != nullptr, errors::FailedPrecondition("deltanet: threshold-clip kernels not registered"));
    const Tensor& x = ctx->input(0);
    const Tensor& theta = ctx->input(1);
    int64_t n, t, e;
    OP_REQUIRES(ctx, clip_dims(x, 3, &n, &t, &e), errors::InvalidArgument("x must be (N, T, ..., C), got ", x.shape().DebugString()));
    const int64_t c = x.dim_size(x.dims() - 1);
    OP_REQUIRES(ctx, theta.dims() == 1 && theta.dim_size(0) == c,
                errors::InvalidArgument("theta must be (C,) with C = ", c, ", got ", theta.shape().DebugString()));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    Tensor* stats_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({4}), &stats_out));
    // theta tiled over the pixels: each element's threshold (np.tile(theta, m) in Python)
    Tensor theta_row;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, TensorShape({e}), &theta_row));
    const float* th = theta.flat<float>().data();
    float* row = theta_row.flat<float>().data();
    for (int64_t k = 0; k < e; ++k) row[k] = th[k % c];
    std::vector<double> per_clip(static_cast<size_t>(4 * n), 0.0);
    const float* xp = x.flat<float>().data();
    float* yp = y->flat<float>().data();
    for_each_clip(ctx, n, t * e * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) kernel(xp + i * t * e, row, yp + i * t * e, t, e, &per_clip[4 * i]);
    });
    // summed clip after clip, as the serial Python path does: the same result on any thread count
    double stats[4] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < 4; ++j) stats[j] += per_clip[4 * i + j];
    float* s = stats_out->flat<float>().data();
    for (int j = 0; j < 4; ++j) s[j] = static_cast<float>(stats[j]);
  }
};

class ThresholdClipBackwardOp : public OpKernel {
 public:
  explicit ThresholdClipBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    BackwardFn kernel = backward_fn.load();
    OP_REQUIRES(ctx, kernel != nullptr, errors::FailedPrecondition("deltanet: threshold-clip kernels not registered"));
    const Tensor& y = ctx->input(0);
    const Tensor& g_y = ctx->input(1);
    OP_REQUIRES(ctx, y.shape() == g_y.shape(),
                errors::InvalidArgument("y and g_y must have one shape, got ", y.shape().DebugString(), " and ",
                                        g_y.shape().DebugString()));
    OP_REQUIRES(ctx, ctx->input(2).NumElements() == 1 && ctx->input(3).NumElements() == 1,
                errors::InvalidArgument("g_l1 and g_l2 must be scalars"));
    int64_t n, t, e;
    OP_REQUIRES(ctx, clip_dims(y, 2, &n, &t, &e), errors::InvalidArgument("y must be (N, T, ...), got ", y.shape().DebugString()));
    const float g_l1 = ctx->input(2).flat<float>()(0);
    const float two_g_l2 = 2.0f * ctx->input(3).flat<float>()(0);
    Tensor* g_x = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, y.shape(), &g_x));
    const float* yp = y.flat<float>().data();
    const float* gyp = g_y.flat<float>().data();
    float* gxp = g_x->flat<float>().data();
    for_each_clip(ctx, n, t * e * 12, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) kernel(yp + i * t * e, gyp + i * t * e, gxp + i * t * e, t, e, g_l1, two_g_l2);
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("DeltanetThresholdClipForward").Device(DEVICE_CPU), ThresholdClipForwardOp);
REGISTER_KERNEL_BUILDER(Name("DeltanetThresholdClipBackward").Device(DEVICE_CPU), ThresholdClipBackwardOp);

}  // namespace tensorflow
