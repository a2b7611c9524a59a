// Fused CPU kernels for qsearch fake quantization.
//
// `fake_quantize` quantizes a tensor in one pass and, with Quant-Noise,
// decides per element whether to quantize it from a counter hash of
// (seed, index). `fold_weight` does the same for the batch-norm-folded weight
// of a conv-BN layer in training, Q(W * f) / f with f = gamma / sqrt(var + eps),
// which takes about fifteen small operators otherwise. Both carry their own
// autograd, the clipped straight-through estimator: the backward pass
// recomputes the Quant-Noise decisions from the seed, so no mask is stored,
// and a training step never returns to Python for them.
//
// NOTE: `fake_quantize` keeps its input for the backward pass, which costs
// no memory where the next operator keeps it too. Changing that input in
// place before backward raises autograd's "modified by an inplace operation"
// error; the PyTorch path keeps a gate tensor instead and allows it. A
// stored gate cost 0.6 ms of a 15 ms TC-ResNet8 step, so it was dropped.
//
// qsearch/quant/fused.py builds and loads this file. The values are those of
// qsearch/quant/quantizers.py and conv_bn.py, bit for bit, and the gradients
// agree to within float32 rounding; the tests compare the two paths.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

namespace {

// Every element is quantized when the decision threshold reaches 2**32.
constexpr int64_t kAlwaysQuantize = int64_t{1} << 32;

// A 32-bit integer hash of multiply-xorshift rounds. The tests check that the
// decisions it gives neighbouring elements are uncorrelated.
inline uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x21f0aaadu;
  h ^= h >> 15;
  h *= 0x735a2d97u;
  h ^= h >> 15;
  return h;
}

// True when element `index` is quantized: its hash lies below `below`,
// which is round(noise_prob * 2**32).
inline bool quantized_here(uint32_t index, uint32_t seed, int64_t below) {
  return static_cast<int64_t>(mix32(index * 0x9e3779b9u + seed)) < below;
}

// Symmetric fixed point on [-1, 1) with bits - 1 fractional bits.
struct SymmetricGrid {
  float inv_scale, scale, lo, hi;

  explicit SymmetricGrid(int64_t bits)
      : inv_scale(std::ldexp(1.0f, static_cast<int>(bits) - 1)),
        scale(std::ldexp(1.0f, 1 - static_cast<int>(bits))),
        lo(-std::ldexp(1.0f, static_cast<int>(bits) - 1)),
        hi(std::ldexp(1.0f, static_cast<int>(bits) - 1) - 1.0f) {}

  float operator()(float v) const {
    // The scale is a power of two, so the products are exact. Clamping
    // before rounding gives the same code, since the bounds are integers,
    // and the comparisons keep NaN as NaN, as torch.clamp does.
    float code = v * inv_scale;
    code = code < lo ? lo : code;
    code = code > hi ? hi : code;
    return std::nearbyint(code) * scale;  // ties to even
  }
};

// Zero or a signed power of two, 2**-(2**(bits-1) - 1) .. 2**-1.
struct PowerOf2Grid {
  float threshold;
  int min_exponent, max_exponent;
  bool round_exponent;

  PowerOf2Grid(int64_t bits, bool round)
      // At 8 bits the threshold 2**-255 is 0 in float32, as in Python.
      : threshold(static_cast<float>(std::ldexp(1.0, 1 - (1 << bits)))),
        min_exponent(1 - (1 << (bits - 1))),
        max_exponent(-1),
        round_exponent(round) {}

  float operator()(float v) const {
    // NaN becomes 0, as the PyTorch operators give (torch.sign(nan) is 0).
    if (std::isnan(v)) return 0.0f;
    const float magnitude = std::fabs(v);
    if (magnitude < threshold || v == 0.0f) return 0.0f;
    int exponent = 0;
    const float mantissa = std::frexp(magnitude, &exponent);  // in [0.5, 1)
    // Rounding the exponent to nearest compares in double: the float32
    // nearest to sqrt(0.5) lies below it.
    if (round_exponent ? static_cast<double>(mantissa) < std::sqrt(0.5) : mantissa == 0.5f) {
      exponent -= 1;
    }
    exponent = std::clamp(exponent, min_exponent, max_exponent);
    const float power = std::ldexp(1.0f, exponent);
    return v < 0.0f ? -power : power;
  }
};

// Call `body` with the quantizer that the arguments describe.
template <typename Body>
auto with_grid(int64_t bits, bool power_of_2, bool round_exponent, Body body) {
  if (power_of_2) {
    TORCH_CHECK(bits >= 2 && bits <= 8, "power-of-2 bits must be in 2..8, got ", bits);
    return body(PowerOf2Grid(bits, round_exponent));
  }
  TORCH_CHECK(bits >= 2 && bits <= 32, "symmetric bits must be in 2..32, got ", bits);
  return body(SymmetricGrid(bits));
}

void check_float_cpu(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), "qsearch kernels take CPU tensors, but ", name, " is on ",
              x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat, "qsearch kernels take float32 tensors, but ", name,
              " is ", x.scalar_type());
}

// Elements per block: quantize a block in one vectorized loop, then restore
// the elements that Quant-Noise leaves unquantized in a second one.
constexpr int64_t kBlock = 1024;

// dst[i] = quantize(src[i] * pre) * post for i in [0, n), except the
// elements that Quant-Noise keeps, which stay src[i] * pre * post.
template <typename Grid>
void quantize_span(const float* src, float* dst, int64_t n, int64_t first_index, float pre,
                   float post, const Grid& quantize, int64_t below, uint32_t seed) {
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = std::min(begin + kBlock, n);
    for (int64_t i = begin; i < end; ++i) dst[i] = quantize(src[i] * pre) * post;
    if (below < kAlwaysQuantize) {
      const auto start = static_cast<uint32_t>(first_index + begin);
      for (int64_t i = begin; i < end; ++i) {
        // Both values loaded unconditionally, so the loop vectorizes.
        const float quantized = dst[i];
        const float original = src[i] * pre * post;
        const bool quantize_it =
            quantized_here(start + static_cast<uint32_t>(i - begin), seed, below);
        dst[i] = quantize_it ? quantized : original;
      }
    }
  }
}

// True where the straight-through gradient passes: |v| <= 1, or the element
// was left unquantized.
inline bool gate(float v, int64_t index, uint32_t seed, int64_t below) {
  return std::fabs(v) <= 1.0f ||
         (below < kAlwaysQuantize && !quantized_here(static_cast<uint32_t>(index), seed, below));
}

// ---------------------------------------------------------------------------
// fake_quantize(x): the quantizers of FakeQuantize and the quantization classes.

// A dense tensor is processed in its own memory order, so the result keeps
// the input's layout (channels_last included); others are made contiguous.
at::Tensor dense(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

at::Tensor fake_quantize_forward(const at::Tensor& input, int64_t bits, bool power_of_2,
                                 bool round_exponent, int64_t below, int64_t seed) {
  check_float_cpu(input, "x");
  const at::Tensor x = dense(input);
  at::Tensor out = at::empty_like(x);
  const float* src = x.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  with_grid(bits, power_of_2, round_exponent, [&](const auto& grid) {
    // Split across torch's intra-op threads; the hash takes the global index.
    at::parallel_for(0, x.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      quantize_span(src + begin, dst + begin, end - begin, begin, 1.0f, 1.0f, grid, below,
                    static_cast<uint32_t>(seed));
    });
    return 0;
  });
  return out;
}

at::Tensor fake_quantize_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                  int64_t below, int64_t seed) {
  // The same memory order as in forward, so the noise decisions line up, and
  // the gradient in that order too.
  const at::Tensor x = dense(input);
  at::Tensor grad = grad_output.to(at::kFloat);
  TORCH_CHECK(grad.sizes() == x.sizes(), "qsearch::fake_quantize: gradient shape differs");
  if (grad.strides() != x.strides()) grad = at::empty_like(x).copy_(grad);
  at::Tensor out = at::empty_like(x);
  const float* g = grad.const_data_ptr<float>();
  const float* src = x.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  const auto s = static_cast<uint32_t>(seed);
  at::parallel_for(0, x.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];  // loaded unconditionally, so the loop vectorizes
      dst[i] = gate(src[i], i, s, below) ? gi : 0.0f;
    }
  });
  return out;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FakeQuantizeFunction : public torch::autograd::Function<FakeQuantizeFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t bits,
                            bool power_of_2, bool round_exponent, int64_t below, int64_t seed) {
    ctx->save_for_backward({x});
    ctx->saved_data["below"] = below;
    ctx->saved_data["seed"] = seed;
    return fake_quantize_forward(x, bits, power_of_2, round_exponent, below, seed);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor grad =
        fake_quantize_backward(grads[0], ctx->get_saved_variables()[0],
                               ctx->saved_data["below"].toInt(), ctx->saved_data["seed"].toInt());
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor fake_quantize(const at::Tensor& x, int64_t bits, bool power_of_2, bool round_exponent,
                         int64_t below, int64_t seed) {
  return FakeQuantizeFunction::apply(x, bits, power_of_2, round_exponent, below, seed);
}

// ---------------------------------------------------------------------------
// fold_weight(W, gamma, running_var): the training weight of a conv-BN layer.
//
// With f = gamma / sqrt(running_var + eps) per output channel and s the
// weight scale (1, or the power of two above max |W * f| for pow2 scaling),
// the result is Q((W * f) / s) * s / f: the convolution on it equals the
// convolution on the quantized folded weight divided by f per channel.
// The backward pass follows the straight-through estimator with s held
// constant, as the PyTorch operators do:
//   dW     = g * gate
//   dgamma = sum_k g * (gate * W - w) / f / sqrt(running_var + eps)
// with running_var as it was in the forward pass.

std::tuple<at::Tensor, at::Tensor> fold_weight_forward(const at::Tensor& weight_input,
                                                       const at::Tensor& factor, bool pow2_scale,
                                                       int64_t bits, bool power_of_2,
                                                       bool round_exponent, int64_t below,
                                                       int64_t seed) {
  check_float_cpu(weight_input, "weight");
  const at::Tensor weight = weight_input.contiguous();
  const int64_t channels = weight.size(0);
  const int64_t per_channel = channels == 0 ? 0 : weight.numel() / channels;
  const float* w = weight.const_data_ptr<float>();
  const float* f = factor.const_data_ptr<float>();

  float scale = 1.0f;
  if (pow2_scale) {
    // The smallest power of two above max |W * f|. It is 1 for an all-zero
    // weight, and for a NaN or infinite one, as torch.frexp gives there.
    float max_abs = 0.0f;
    for (int64_t i = 0; i < channels * per_channel && !std::isnan(max_abs); ++i) {
      const float magnitude = std::fabs(w[i] * f[i / per_channel]);
      max_abs = std::isnan(magnitude) ? magnitude : std::max(max_abs, magnitude);
    }
    if (std::isfinite(max_abs)) {
      int exponent = 0;
      std::frexp(max_abs, &exponent);
      scale = std::ldexp(1.0f, exponent);
    }
  }

  at::Tensor out = at::empty_like(weight, at::MemoryFormat::Contiguous);
  float* dst = out.mutable_data_ptr<float>();
  // W * f per channel, divided by the scale, quantized, multiplied back and
  // divided by f: the same rounding steps as the PyTorch operators.
  at::Tensor folded = at::empty({per_channel}, weight.options());
  float* u = folded.mutable_data_ptr<float>();
  with_grid(bits, power_of_2, round_exponent, [&](const auto& grid) {
    for (int64_t c = 0; c < channels; ++c) {
      const float fc = f[c];
      for (int64_t k = 0; k < per_channel; ++k) u[k] = w[c * per_channel + k] * fc / scale;
      float* row = dst + c * per_channel;
      quantize_span(u, row, per_channel, c * per_channel, 1.0f, 1.0f, grid, below,
                    static_cast<uint32_t>(seed));
      for (int64_t k = 0; k < per_channel; ++k) row[k] = row[k] * scale / fc;
    }
    return 0;
  });
  return {out, at::scalar_tensor(scale, weight.options())};
}

struct FoldWeightFunction : public torch::autograd::Function<FoldWeightFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& weight,
                               const at::Tensor& gamma, const at::Tensor& running_var, double eps,
                               bool pow2_scale, int64_t bits, bool power_of_2,
                               bool round_exponent, int64_t below, int64_t seed) {
    check_float_cpu(gamma, "gamma");
    check_float_cpu(running_var, "running_var");
    TORCH_CHECK(gamma.numel() == weight.size(0) && running_var.numel() == weight.size(0),
                "qsearch::fold_weight: gamma and running_var need one value per output channel");
    // Rounded as the PyTorch operators round it. The batch norm updates
    // running_var in place after this, so the backward pass keeps `std`.
    const at::Tensor std = at::sqrt(running_var + eps).contiguous();
    const at::Tensor factor = (gamma / std).contiguous();
    auto [out, scale] = fold_weight_forward(weight, factor, pow2_scale, bits, power_of_2,
                                            round_exponent, below, seed);
    ctx->save_for_backward({weight, factor, std, out, scale});
    ctx->saved_data["below"] = below;
    ctx->saved_data["seed"] = seed;
    ctx->mark_non_differentiable({scale});
    return {out, scale};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor weight = saved[0].contiguous();
    const at::Tensor& factor = saved[1];
    const at::Tensor& std = saved[2];
    const at::Tensor& out = saved[3];
    const float scale = saved[4].item<float>();
    const int64_t below = ctx->saved_data["below"].toInt();
    const auto seed = static_cast<uint32_t>(ctx->saved_data["seed"].toInt());

    const at::Tensor grad = grads[0].to(at::kFloat).contiguous();
    const int64_t channels = weight.size(0);
    const int64_t per_channel = channels == 0 ? 0 : weight.numel() / channels;
    at::Tensor grad_weight = at::empty_like(weight, at::MemoryFormat::Contiguous);
    at::Tensor grad_gamma = at::empty({channels}, weight.options());
    const float* g = grad.const_data_ptr<float>();
    const float* w = weight.const_data_ptr<float>();
    const float* f = factor.const_data_ptr<float>();
    const float* q = out.const_data_ptr<float>();
    const float* sd = std.const_data_ptr<float>();
    float* gw = grad_weight.mutable_data_ptr<float>();
    float* gg = grad_gamma.mutable_data_ptr<float>();
    for (int64_t c = 0; c < channels; ++c) {
      double sum = 0.0;
      for (int64_t k = 0; k < per_channel; ++k) {
        const int64_t i = c * per_channel + k;
        const bool pass = gate(w[i] * f[c] / scale, i, seed, below);
        const float gi = g[i];
        gw[i] = pass ? gi : 0.0f;
        sum += static_cast<double>(gi) * ((pass ? w[i] : 0.0f) - q[i]);
      }
      gg[c] = static_cast<float>(sum / f[c] / sd[c]);
    }
    return {grad_weight, grad_gamma, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(),  at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> fold_weight(const at::Tensor& weight, const at::Tensor& gamma,
                                               const at::Tensor& running_var, double eps,
                                               bool pow2_scale, int64_t bits, bool power_of_2,
                                               bool round_exponent, int64_t below, int64_t seed) {
  const auto outputs =
      FoldWeightFunction::apply(weight, gamma, running_var, eps, pow2_scale, bits, power_of_2,
                                round_exponent, below, seed);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY(qsearch, m) {
  m.def("fake_quantize(Tensor x, int bits, bool power_of_2, bool round_exponent, int below,"
        " int seed) -> Tensor");
  m.def("fold_weight(Tensor weight, Tensor gamma, Tensor running_var, float eps,"
        " bool pow2_scale, int bits, bool power_of_2, bool round_exponent, int below, int seed)"
        " -> (Tensor, Tensor)");
}

// CompositeImplicitAutograd: the functions above carry their own autograd
// and run on the CPU only (they check their inputs).
TORCH_LIBRARY_IMPL(qsearch, CompositeImplicitAutograd, m) {
  m.impl("fake_quantize", &fake_quantize);
  m.impl("fold_weight", &fold_weight);
}
