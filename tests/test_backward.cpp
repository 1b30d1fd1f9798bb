// The CPU backward operations (tim/cpu/train_ops.hpp) against double-precision central
// differences of their forwards (tests/gradient_check.hpp: step, tolerance and why), on tiny
// shapes with odd sizes; a few against their double results when run in float.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "compare.hpp"
#include "gradient_check.hpp"
#include "tim/tim.hpp"

using tim::cpu;
using tim_test::check_gradient;
using tim_test::numeric_gradient;
using tim_test::random_vector;
using tim_test::weighted_sum;
using V = std::vector<double>;

TEST_CASE("gradient check: a wrong gradient is caught") {
  // The harness itself: the exact gradient of L = sum w_i u_i^2 passes, one entry off by 1e-4 of
  // the largest gradient fails (so every check below can see such an error).
  auto u = random_vector<double>(9, 1), w = random_vector<double>(9, 2);
  const auto loss = [&] {
    double s = 0;
    for (int i = 0; i < 9; ++i) s += w[i] * u[i] * u[i];
    return s;
  };
  const V numeric = numeric_gradient(u.data(), u.size(), loss);
  V exact(9);
  for (int i = 0; i < 9; ++i) exact[i] = 2 * w[i] * u[i];
  CHECK(tim_test::gradient_error(exact.data(), numeric.data(), 9) <= tim_test::gradient_tolerance);
  double largest = 0;
  for (double g : exact) largest = std::max(largest, std::abs(g));
  exact[4] += 1e-4 * largest;
  CHECK(tim_test::gradient_error(exact.data(), numeric.data(), 9) > tim_test::gradient_tolerance);
}

TEST_CASE("linear_backward against central differences, dx accumulating") {
  const int rows = 7, in = 5, out = 3;
  auto x = random_vector<double>(rows * in, 1), w = random_vector<double>(out * in, 2), b = random_vector<double>(out, 3);
  auto dy = random_vector<double>(rows * out, 4);
  V y(rows * out);
  const auto loss = [&] {
    cpu::linear_forward(y.data(), x.data(), w.data(), b.data(), rows, in, out);
    return weighted_sum(dy.data(), y.data(), y.size());
  };
  V dx(rows * in, 0.0), dw(out * in, 0.5), db(out, -0.25);  // parameter gradients accumulate
  cpu::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), rows, in, out);
  for (auto& g : dw) g -= 0.5;
  for (auto& g : db) g += 0.25;
  check_gradient("dx", dx.data(), numeric_gradient(x.data(), x.size(), loss));
  check_gradient("dweight", dw.data(), numeric_gradient(w.data(), w.size(), loss));
  check_gradient("dbias", db.data(), numeric_gradient(b.data(), b.size(), loss));
  V acc(rows * in, 1.0);
  cpu::linear_backward(acc.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), dy.data(), x.data(),
                       w.data(), rows, in, out, true);
  for (std::size_t i = 0; i < acc.size(); ++i) CHECK(acc[i] - 1.0 == doctest::Approx(dx[i]).epsilon(1e-14));
}

TEST_CASE("linear_backward in float against double, within the dot-product error bound") {
  // Every gradient is a sum of K products (K = out for dx, rows for dweight and dbias). In float,
  // with the inputs rounded to float too (2 more roundings per product), the error of such a sum
  // is at most gamma_{K+2} sum |terms|, gamma_n = n u / (1 - n u), u = 2^-24 (Higham, Accuracy
  // and Stability of Numerical Algorithms, 3.1), whatever the summation order or use of FMA.
  const int rows = 93, in = 31, out = 17;
  auto x = random_vector<double>(rows * in, 5), w = random_vector<double>(out * in, 6), dy = random_vector<double>(rows * out, 7);
  V dx(rows * in), dw(out * in, 0.0), db(out, 0.0);
  cpu::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), rows, in, out);
  std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), dyf(dy.begin(), dy.end());
  std::vector<float> dxf(rows * in), dwf(out * in, 0.0f), dbf(out, 0.0f);
  cpu::linear_backward(dxf.data(), dwf.data(), dbf.data(), dyf.data(), xf.data(), wf.data(), rows, in, out);
  const double u = std::ldexp(1.0, -24);
  const auto gamma = [&](int n) { return n * u / (1 - n * u); };
  int failures = 0;
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < in; ++i) {
      double terms = 0;
      for (int o = 0; o < out; ++o) terms += std::abs(dy[r * out + o] * w[o * in + i]);
      failures += std::abs(dxf[r * in + i] - dx[r * in + i]) > gamma(out + 2) * terms;
    }
  for (int o = 0; o < out; ++o) {
    double bias_terms = 0;
    for (int r = 0; r < rows; ++r) bias_terms += std::abs(dy[r * out + o]);
    failures += std::abs(dbf[o] - db[o]) > gamma(rows + 2) * bias_terms;
    for (int i = 0; i < in; ++i) {
      double terms = 0;
      for (int r = 0; r < rows; ++r) terms += std::abs(dy[r * out + o] * x[r * in + i]);
      failures += std::abs(dwf[o * in + i] - dw[o * in + i]) > gamma(rows + 2) * terms;
    }
  }
  CHECK(failures == 0);
}

TEST_CASE("layernorm_backward against central differences, with and without affine") {
  const int rows = 5, cols = 13;
  auto x = random_vector<double>(rows * cols, 8, 2.0), w = random_vector<double>(cols, 9), b = random_vector<double>(cols, 10);
  for (auto& v : w) v += 1.0;
  auto dy = random_vector<double>(rows * cols, 11);
  for (int affine = 0; affine < 2; ++affine) {
    CAPTURE(affine);
    const double* wp = affine ? w.data() : nullptr;
    const double* bp = affine ? b.data() : nullptr;
    V y(rows * cols), mean(rows), rstd(rows), plain(rows * cols);
    const auto loss = [&] {
      cpu::layernorm_forward(y.data(), x.data(), wp, bp, rows, cols, 1e-5);
      return weighted_sum(dy.data(), y.data(), y.size());
    };
    cpu::layernorm_training_forward(y.data(), mean.data(), rstd.data(), x.data(), wp, bp, rows, cols, 1e-5);
    cpu::layernorm_forward(plain.data(), x.data(), wp, bp, rows, cols, 1e-5);
    CHECK(y == plain);  // the training forward is the same function
    for (int r = 0; r < rows; ++r) {
      double m = 0, v = 0;
      for (int j = 0; j < cols; ++j) m += x[r * cols + j] / cols;
      for (int j = 0; j < cols; ++j) v += (x[r * cols + j] - m) * (x[r * cols + j] - m) / cols;
      CHECK(mean[r] == doctest::Approx(m).epsilon(1e-14));
      CHECK(rstd[r] == doctest::Approx(1 / std::sqrt(v + 1e-5)).epsilon(1e-14));
    }
    V dx(rows * cols), dw(cols, 0.0), db(cols, 0.0);
    cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), mean.data(), rstd.data(), wp, rows,
                            cols);
    check_gradient("dx", dx.data(), numeric_gradient(x.data(), x.size(), loss));
    if (affine) {
      check_gradient("dweight", dw.data(), numeric_gradient(w.data(), w.size(), loss));
      check_gradient("dbias", db.data(), numeric_gradient(b.data(), b.size(), loss));
    }
  }
}

TEST_CASE("modulate_backward and gated_residual_backward against central differences") {
  const int B = 2, N = 3, D = 5, stride = 17;  // three chunks (shift, scale, gate) of a wider modulation row
  auto u = random_vector<double>(B * N * D, 12), mod = random_vector<double>(B * stride, 13);
  auto dy = random_vector<double>(B * N * D, 14), residual = random_vector<double>(B * N * D, 15);
  const double* shift = mod.data();
  const double* scale = mod.data() + D;
  V y(B * N * D);
  const auto modulate_loss = [&] {
    y = u;
    cpu::modulate_forward(y.data(), shift, scale, B, N, D, stride);
    return weighted_sum(dy.data(), y.data(), y.size());
  };
  V du(B * N * D), dmod(B * stride, 0.0);
  cpu::modulate_backward(du.data(), dmod.data(), dmod.data() + D, dy.data(), u.data(), scale, B, N, D, stride);
  check_gradient("modulate du", du.data(), numeric_gradient(u.data(), u.size(), modulate_loss));
  const V numeric_mod = numeric_gradient(mod.data(), mod.size(), modulate_loss);
  check_gradient("modulate dshift, dscale", dmod.data(), numeric_mod);

  const auto gated_loss = [&] {
    y = residual;
    cpu::gated_residual_forward(y.data(), mod.data() + 2 * D, u.data(), B, N, D, stride);
    return weighted_sum(dy.data(), y.data(), y.size());
  };
  V dupdate(B * N * D), dgate(B * stride, 0.0);
  cpu::gated_residual_backward(dupdate.data(), dgate.data() + 2 * D, dy.data(), mod.data() + 2 * D, u.data(), B, N, D,
                               stride);
  check_gradient("gated dupdate", dupdate.data(), numeric_gradient(u.data(), u.size(), gated_loss));
  check_gradient("gated dgate", dgate.data(), numeric_gradient(mod.data(), mod.size(), gated_loss));
  // The residual's gradient is dy itself (the backward leaves it alone).
  check_gradient("gated dresidual", dy.data(), numeric_gradient(residual.data(), residual.size(), gated_loss));
}

TEST_CASE("swiglu_backward and silu_backward against central differences") {
  const int rows = 3, cols = 7, stride = 9;
  auto gate = random_vector<double>(rows * stride, 16, 2.0), value = random_vector<double>(rows * stride, 17);
  auto dy = random_vector<double>(rows * cols, 18);
  V y(rows * cols);
  const auto loss = [&] {
    cpu::swiglu_forward(y.data(), gate.data(), value.data(), rows, cols, stride, stride);
    return weighted_sum(dy.data(), y.data(), y.size());
  };
  V dgate(rows * stride, 0.0), dvalue(rows * stride, 0.0);
  cpu::swiglu_backward(dgate.data(), dvalue.data(), dy.data(), gate.data(), value.data(), rows, cols, stride, stride);
  check_gradient("dgate", dgate.data(), numeric_gradient(gate.data(), gate.size(), loss));
  check_gradient("dvalue", dvalue.data(), numeric_gradient(value.data(), value.size(), loss));

  auto s = random_vector<double>(23, 19, 3.0), ds = random_vector<double>(23, 20);
  V o(23), din(23);
  const auto silu_loss = [&] {
    cpu::silu_forward(o.data(), s.data(), 23);
    return weighted_sum(ds.data(), o.data(), 23);
  };
  cpu::silu_backward(din.data(), ds.data(), s.data(), 23);
  check_gradient("silu", din.data(), numeric_gradient(s.data(), s.size(), silu_loss));
}

TEST_CASE("embedding_backward scatter-adds repeated labels, patchify and unpatchify backward") {
  const int rows = 4, D = 3, B = 5;
  auto table = random_vector<double>(rows * D, 21), dy = random_vector<double>(B * D, 22);
  const std::int64_t index[B] = {2, 0, 2, 3, 2};
  V y(B * D);
  const auto loss = [&] {
    cpu::embedding_forward(y.data(), table.data(), index, B, D);
    return weighted_sum(dy.data(), y.data(), y.size());
  };
  V dtable(rows * D, 0.0);
  cpu::embedding_backward(dtable.data(), dy.data(), index, B, D);
  const V numeric = numeric_gradient(table.data(), table.size(), loss);
  check_gradient("dtable", dtable.data(), numeric);
  for (int j = 0; j < D; ++j) CHECK(dtable[1 * D + j] == 0.0);  // row 1 is never used

  const int C = 3, H = 4, W = 6, p = 2, tokens = B * (H / p) * (W / p);
  auto x = random_vector<double>(B * C * H * W, 23), dpatches = random_vector<double>(tokens * C * p * p, 24);
  V patches(tokens * C * p * p), dx(x.size());
  const auto patch_loss = [&] {
    cpu::patchify_forward(patches.data(), x.data(), B, C, H, W, p);
    return weighted_sum(dpatches.data(), patches.data(), patches.size());
  };
  cpu::patchify_backward(dx.data(), dpatches.data(), B, C, H, W, p);
  check_gradient("patchify dx", dx.data(), numeric_gradient(x.data(), x.size(), patch_loss));

  auto tok = random_vector<double>(tokens * p * p * C, 25), dout = random_vector<double>(B * C * H * W, 26);
  V image(dout.size()), dtok(tok.size());
  const auto unpatch_loss = [&] {
    cpu::unpatchify_forward(image.data(), tok.data(), B, C, H, W, p);
    return weighted_sum(dout.data(), image.data(), image.size());
  };
  cpu::unpatchify_backward(dtok.data(), dout.data(), B, C, H, W, p);
  check_gradient("unpatchify dtokens", dtok.data(), numeric_gradient(tok.data(), tok.size(), unpatch_loss));
}

namespace {
//! Rotary tables (N, hd/2) of an h x w grid, as the network's workspace builds them.
void rotary_tables(V& cos_table, V& sin_table, std::int64_t h, std::int64_t w, int hd) {
  cos_table.resize(h * w * hd / 2);
  sin_table.resize(cos_table.size());
  for (std::int64_t n = 0; n < h * w; ++n)
    for (int pair = 0; pair < hd / 2; ++pair) {
      const double angle = tim::math::rotary_angle<double>(n, h, hd, pair);
      cos_table[n * (hd / 2) + pair] = std::cos(angle);
      sin_table[n * (hd / 2) + pair] = std::sin(angle);
    }
}
}  // namespace

TEST_CASE("qkv_split_backward (qkv_d bias, qk-norm, 2-D rotary, q scale) against central differences") {
  const int B = 2, h = 3, w = 5, N = h * w, nh = 2, hd = 8, D = nh * hd;
  V cos_table, sin_table;
  rotary_tables(cos_table, sin_table, h, w, hd);
  auto qkv = random_vector<double>(B * N * 3 * D, 27), bias = random_vector<double>(B * 3 * D, 28);
  auto qw = random_vector<double>(hd, 29, 0.3), qb = random_vector<double>(hd, 30, 0.3);
  auto kw = random_vector<double>(hd, 31, 0.3), kb = random_vector<double>(hd, 32, 0.3);
  for (auto* nw : {&qw, &kw})
    for (auto& v : *nw) v += 1.0;
  auto gq = random_vector<double>(B * N * D, 33), gk = random_vector<double>(B * N * D, 34), gv = random_vector<double>(B * N * D, 35);
  const double q_scale = 1 / std::sqrt(double(hd));
  for (int variant = 0; variant < 2; ++variant) {
    // 0: the released configuration (qk-norm, qkv_d); 1: rotary alone (no norms, no bias).
    CAPTURE(variant);
    const bool full = variant == 0;
    const double* bp = full ? bias.data() : nullptr;
    const double *qwp = full ? qw.data() : nullptr, *qbp = full ? qb.data() : nullptr;
    const double *kwp = full ? kw.data() : nullptr, *kbp = full ? kb.data() : nullptr;
    V q(B * N * D), k(B * N * D), v(B * N * D);
    const auto loss = [&] {
      cpu::qkv_split_forward(q.data(), k.data(), v.data(), qkv.data(), bp, qwp, qbp, kwp, kbp, 1e-5, cos_table.data(),
                             sin_table.data(), B, N, nh, hd, q_scale);
      return weighted_sum(gq.data(), q.data(), q.size()) + weighted_sum(gk.data(), k.data(), k.size()) +
             weighted_sum(gv.data(), v.data(), v.size());
    };
    V qm(B * nh * N), qr(B * nh * N), km(B * nh * N), kr(B * nh * N), q2(q.size()), k2(k.size()), v2(v.size());
    cpu::qkv_split_training_forward(q2.data(), k2.data(), v2.data(), qm.data(), qr.data(), km.data(), kr.data(),
                                    qkv.data(), bp, qwp, qbp, kwp, kbp, 1e-5, cos_table.data(), sin_table.data(), B, N,
                                    nh, hd, q_scale);
    loss();
    CHECK(q2 == q);
    CHECK(k2 == k);
    CHECK(v2 == v);
    V dqkv(qkv.size()), dbias(bias.size(), 0.0), dqw(hd, 0.0), dqb(hd, 0.0), dkw(hd, 0.0), dkb(hd, 0.0);
    cpu::qkv_split_backward(dqkv.data(), full ? dbias.data() : nullptr, dqw.data(), dqb.data(), dkw.data(), dkb.data(),
                            gq.data(), gk.data(), gv.data(), qkv.data(), bp, qwp, kwp, qm.data(), qr.data(), km.data(),
                            kr.data(), cos_table.data(), sin_table.data(), B, N, nh, hd, q_scale);
    check_gradient("dqkv", dqkv.data(), numeric_gradient(qkv.data(), qkv.size(), loss));
    if (full) {
      check_gradient("dsample_bias (qkv_d term)", dbias.data(), numeric_gradient(bias.data(), bias.size(), loss));
      check_gradient("dq_norm.weight", dqw.data(), numeric_gradient(qw.data(), qw.size(), loss));
      check_gradient("dq_norm.bias", dqb.data(), numeric_gradient(qb.data(), qb.size(), loss));
      check_gradient("dk_norm.weight", dkw.data(), numeric_gradient(kw.data(), kw.size(), loss));
      check_gradient("dk_norm.bias", dkb.data(), numeric_gradient(kb.data(), kb.size(), loss));
    }
  }
}

namespace {
//! Checks attention_training_forward (against attention_forward and a naive logsumexp) and
//! attention_backward (against central differences) for one shape.
void check_attention(int B, int nh, int Nq, int Nk, int hd, double scale, std::uint32_t seed) {
  auto q = random_vector<double>(B * nh * Nq * hd, seed), k = random_vector<double>(B * nh * Nk * hd, seed + 1);
  auto v = random_vector<double>(B * nh * Nk * hd, seed + 2), dout = random_vector<double>(B * Nq * nh * hd, seed + 3);
  V out(dout.size()), trained(dout.size()), lse(B * nh * Nq);
  const auto loss = [&] {
    cpu::attention_forward(out.data(), q.data(), k.data(), v.data(), B, nh, Nq, Nk, hd, scale);
    return weighted_sum(dout.data(), out.data(), out.size());
  };
  loss();
  cpu::attention_training_forward(trained.data(), lse.data(), q.data(), k.data(), v.data(), B, nh, Nq, Nk, hd, scale);
  CHECK(trained == out);
  for (int bh = 0; bh < B * nh; ++bh)
    for (int i = 0; i < Nq; ++i) {
      double sum = 0;
      for (int j = 0; j < Nk; ++j) {
        double s = 0;
        for (int c = 0; c < hd; ++c) s += q[(bh * Nq + i) * hd + c] * k[(bh * Nk + j) * hd + c];
        sum += std::exp(scale * s);
      }
      CHECK(lse[bh * Nq + i] == doctest::Approx(std::log(sum)).epsilon(1e-13));
    }
  V dq(q.size()), dk(k.size(), 7.0), dv(v.size(), 7.0);  // dk, dv are written, not added to
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                          lse.data(), B, nh, Nq, Nk, hd, scale);
  check_gradient("dq", dq.data(), numeric_gradient(q.data(), q.size(), loss));
  check_gradient("dk", dk.data(), numeric_gradient(k.data(), k.size(), loss));
  check_gradient("dv", dv.data(), numeric_gradient(v.data(), v.size(), loss));
}
}  // namespace

TEST_CASE("attention_backward (recompute from the logsumexp) against central differences") {
  SUBCASE("self-attention, several heads") { check_attention(2, 3, 7, 7, 5, 1.0, 40); }
  SUBCASE("two query tiles, keys over two chunks, scaled") { check_attention(1, 1, 67, 131, 4, 0.5, 50); }
}

TEST_CASE("attention_backward in float against double") {
  // Error budget in float (u = 6e-8): a score s = scale q.k (hd = 8 products, |s| < 10 here) is
  // off by about hd u |s| <= 5e-6 absolute, and so is lse; P = exp(s - lse) then has a relative
  // error of about 1e-5. The gradients are sums over N = 75 keys (dq, dk) or queries (dv) of such
  // terms: each is within (1e-5 + gamma_75 = 4.5e-6) of its sum of |terms| S. That sum is
  // computed below in double (for dq, dk with |dP| + |delta| in place of |dP - delta|, so the
  // rounding of both is covered too) and asserted to stay within 4 times the tensor's largest
  // gradient (no cancellation); then the error is at most 4 x 1.45e-5 = 5.8e-5 < 1e-4 of it.
  const int B = 1, nh = 2, N = 75, hd = 8;
  auto q = random_vector<double>(B * nh * N * hd, 60), k = random_vector<double>(B * nh * N * hd, 61);
  auto v = random_vector<double>(B * nh * N * hd, 62), dout = random_vector<double>(B * N * nh * hd, 63);
  V out(dout.size()), lse(B * nh * N), dq(q.size()), dk(k.size()), dv(v.size());
  cpu::attention_training_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), B, nh, N, N, hd, 0.35);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                          lse.data(), B, nh, N, N, hd, 0.35);
  std::vector<float> qf(q.begin(), q.end()), kf(k.begin(), k.end()), vf(v.begin(), v.end()), df(dout.begin(), dout.end());
  std::vector<float> of(out.size()), lf(lse.size()), dqf(q.size()), dkf(k.size()), dvf(v.size());
  cpu::attention_training_forward(of.data(), lf.data(), qf.data(), kf.data(), vf.data(), B, nh, N, N, hd, 0.35);
  cpu::attention_backward(dqf.data(), dkf.data(), dvf.data(), df.data(), qf.data(), kf.data(), vf.data(), of.data(),
                          lf.data(), B, nh, N, N, hd, 0.35);
  // The sums of |terms| in double, and their ratio to each tensor's largest gradient.
  V s_dq(dq.size(), 0.0), s_dk(dk.size(), 0.0), s_dv(dv.size(), 0.0);
  for (int bh = 0; bh < B * nh; ++bh) {
    const int b = bh / nh, h = bh % nh;
    const auto row = [&](const V& t, int token) { return &t[((b * N + token) * nh + h) * hd]; };  // out, dout
    for (int i = 0; i < N; ++i) {
      const double* qi = &q[(bh * N + i) * hd];
      const double* doi = row(dout, i);
      double delta = 0;
      for (int c = 0; c < hd; ++c) delta += doi[c] * row(out, i)[c];
      for (int j = 0; j < N; ++j) {
        const double* kj = &k[(bh * N + j) * hd];
        const double* vj = &v[(bh * N + j) * hd];
        double score = 0, dp = 0;
        for (int c = 0; c < hd; ++c) {
          score += qi[c] * kj[c];
          dp += doi[c] * vj[c];
        }
        const double p = std::exp(0.35 * score - lse[bh * N + i]);
        const double ds = p * (std::abs(dp) + std::abs(delta)) * 0.35;
        for (int c = 0; c < hd; ++c) {
          s_dv[(bh * N + j) * hd + c] += p * std::abs(doi[c]);
          s_dq[(bh * N + i) * hd + c] += ds * std::abs(kj[c]);
          s_dk[(bh * N + j) * hd + c] += ds * std::abs(qi[c]);
        }
      }
    }
  }
  const auto largest = [](const V& t) {
    double m = 0;
    for (double x : t) m = std::max(m, std::abs(x));
    return m;
  };
  CHECK(largest(s_dq) <= 4 * largest(dq));
  CHECK(largest(s_dk) <= 4 * largest(dk));
  CHECK(largest(s_dv) <= 4 * largest(dv));
  MESSAGE("attention float: sum of |terms| / largest gradient: dq ", largest(s_dq) / largest(dq), ", dk ",
          largest(s_dk) / largest(dk), ", dv ", largest(s_dv) / largest(dv));
  CHECK(tim_test::gradient_error(dqf.data(), dq.data(), dq.size()) <= 1e-4);
  CHECK(tim_test::gradient_error(dkf.data(), dk.data(), dk.size()) <= 1e-4);
  CHECK(tim_test::gradient_error(dvf.data(), dv.data(), dv.size()) <= 1e-4);
}

TEST_CASE("attention_backward's scratch is linear in the tokens") {
  // Observed, not restated: the calling thread (which runs a share of the jobs of the parallel
  // region) starts without scratch, and after a real call at Nq = Nk = n its buffer holds what
  // that call took. It must be attention_backward_scratch_elements (two score tiles of
  // attention_query_tile rows and one value per query: linear in the keys), never an Nq x Nk
  // buffer; at n = 300 a score matrix (90,000 values) is 2.3x what the tiles take (38,464).
  using Tag = tim::cpu_detail::AttentionBackwardTag;
  const std::int64_t B = 1, nh = 2, hd = 4;
  const auto taken = [&](std::int64_t n) {
    auto q = random_vector<double>(B * nh * n * hd, 70), k = random_vector<double>(B * nh * n * hd, 71);
    auto v = random_vector<double>(B * nh * n * hd, 72), dout = random_vector<double>(B * n * nh * hd, 73);
    V out(dout.size()), lse(B * nh * n), dq(q.size()), dk(k.size()), dv(v.size());
    cpu::attention_training_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), B, nh, n, n, hd, 0.5);
    tim::cpu_detail::release_tagged_scratch<Tag, double>();
    REQUIRE(tim::cpu_detail::tagged_scratch_elements<Tag, double>() == 0);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                            lse.data(), B, nh, n, n, hd, 0.5);
    return tim::cpu_detail::tagged_scratch_elements<Tag, double>();
  };
  const auto small = taken(100), large = taken(300);
  CHECK(small == cpu::attention_backward_scratch_elements(100, hd));
  CHECK(large == cpu::attention_backward_scratch_elements(300, hd));
  CHECK(large == cpu::attention_query_tile * (2 * 300 + 1));
  CHECK(large - small == cpu::attention_query_tile * 2 * 200);  // linear: 2 tile rows per key
  CHECK(large * 2 < 300 * 300);
  static_assert(cpu::attention_query_tile <= 64);
}
