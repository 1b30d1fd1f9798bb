// tim serve: an HTTP server (cpp-httplib) that loads a TiM (class-conditional, or text-to-image
// with its Gemma-3 text encoder) and a latent decoder once and answers POST
// /v1/images/generations in the OpenAI images format, GET /health and GET /v1/models
// (docs/serve.md). Requests are parsed in serve_request.cpp and batched by serve_batcher.cpp;
// this file holds the options, the sampler calls (through tim sample's Generator and
// generate_captioned) and the HTTP side.
// Eigen (through sample.hpp) before httplib.h: <resolv.h>, which it includes, defines a macro `_res`
// that Eigen uses as a parameter name.
#include "sample.hpp"

#include <httplib.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "serve_batcher.hpp"
#include "serve_http.hpp"
#include "serve_request.hpp"
#include "tim/core/cast.hpp"
#include "tim/text/prompts.hpp"
#include "tim/io/image.hpp"
#include "tim/io/png.hpp"

namespace tim_cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using serve::base64, serve::png_bytes, serve::send_error, serve::constant_time_equal, serve::connection_socket,
    serve::peer_closed, serve::utc_now;

struct ServeOptions {
  ModelOptions model;
  ComputeOptions compute;
  std::string vae_path;
  std::string text_encoder;  // text-to-image models: the Gemma-3 folder
  std::int64_t max_length = tim::text::default_max_length;
  std::string hidden_state = "last";
  CLI::Option *max_length_option = nullptr, *hidden_state_option = nullptr;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;
  std::int64_t batch_size = 8;
  std::uint64_t seed = 0;
  CLI::Option* seed_option = nullptr;
  int http_threads = 32;
  serve::Limits limits;
};

//! The run record of one request (sample_png_text writes the PNG chunks from it, as tim sample
//! does): every setting, typed, and the names the AUTOMATIC1111 text shows.
RunRecord served_record(const tim::SampleSettings& s, std::uint64_t seed, const std::string& model,
                        const std::string& vae, const std::string& text_encoder, const std::string& device) {
  RunRecord run;
  nlohmann::json& j = run.settings;
  j["model"] = model;
  if (!text_encoder.empty()) {  // as tim sample --text-encoder records them
    j["text_encoder"] = text_encoder;
    j["caption_batching"] = "per-prompt";
  }
  j["steps"] = s.steps.value;
  j["cfg_scale"] = s.cfg_scale.value;
  j["guidance_low"] = s.guidance_low.value;
  j["guidance_high"] = s.guidance_high.value;
  j["stochasticity"] = s.stochasticity.value;
  j["seed"] = seed;
  j["transport"] = std::string(tim::transport_name(s.transport.value));
  j["t_max"] = s.t_max.value;
  j["t_min"] = s.t_min.value;
  j["schedule"] = s.schedule.value.describe();
  j["mode"] = std::string(tim::sample_mode_name(s.mode.value));
  if (!vae.empty()) j["vae"] = vae;
  j["device"] = device;
  j["tim_version"] = tim::version_string;
  j["served_by"] = "tim serve";
  run.model_name = std::filesystem::path(model).stem().string();
  run.sampler_name = s.mode.value == tim::SampleMode::transition ? "TiM transition" : "TiM diffusion";
  return run;
}

thread_local Clock::time_point request_start;

// ---------------------------------------------------------------------------------------------
// The model side.

struct Served {
  Generator model;
  HostVae vae;
  // Text-to-image models: the prompts' encoder, as `tim sample --text-encoder` loads it.
  std::optional<tim::text::PromptEncoder> encoder;
  std::string text_encoder_path;
  std::int64_t max_length = tim::text::default_max_length;
  tim::text::HiddenState hidden_state = tim::text::HiddenState::last;
  // No lock around tokenization: the HTTP handlers' Tokenizer::frame and the sampler thread's
  // PromptEncoder::encode call the one SentencePieceProcessor's const Encode concurrently, which
  // SentencePiece's maintainer states is thread-safe (google/sentencepiece#207: "It is thread
  // safe"; #657: Encode can be called "from multiple threads simultaneously"; its own batch
  // Encode, since 0.1.97, runs one processor from native threads, #486, and #1136 tests one
  // shared processor under free-threading). tim::text::Tokenizer holds no mutable state of its own.
  serve::ModelFacts facts;
  std::string model_path;
  int threads = 1;  // the sampler's OpenMP threads

  //! Encodes `job`'s prompt as `tim sample --text-encoder DIR --prompt P` does (the prompt alone,
  //! tim::text::PromptEncoder::encode), once; sampler thread only.
  void encode(serve::Job& job) const {
    if (!job.cap_feats.empty_tensor()) return;
    auto encoded = encoder->encode({job.request.prompt}, max_length, hidden_state);
    tim::check(encoded.lengths.front() == job.caption_tokens, "internal error: the prompt encoded to ",
               encoded.lengths.front(), " tokens, the tokenizer gave ", job.caption_tokens);
    job.cap_feats = std::move(encoded.cap_feats);
    job.null_cap_feats = std::move(encoded.null_cap_feats);
  }

  //! One sampler call of up to batch_size rows; the images (1, C, H, W) in float (decoded with
  //! --vae), each row's the bits it gets alone (generate.hpp: every sample on its own, on one
  //! thread, tim::PerSampleNetwork; text-to-image: generate_captioned, each prompt alone).
  std::vector<tim::Tensor<float>> run(const serve::BatchCall& call, const std::function<bool()>& keep_going) {
    // OpenMP's thread count is a per-thread setting: the worker thread sets its own.
    thread_local const bool threads_set = (tim::set_num_threads(threads), true);
    (void)threads_set;
    const tim::SampleSettings& s = call.settings->settings;
    const auto B = static_cast<std::int64_t>(call.sample_indices.size());
    const StepReport report = [&keep_going](int, int) { return keep_going(); };
    std::vector<SampleSpec> specs;
    tim::SampleResult<> result;
    if (!facts.text_to_image) {
      for (std::int64_t b = 0; b < B; ++b)
        specs.push_back({.index = call.sample_indices[static_cast<std::size_t>(b)],
                         .label = call.labels[static_cast<std::size_t>(b)]});
      const auto noise = initial_noise_of(specs, call.seed, model.config(), s);  // as tim sample draws it
      result = model.generate(s, call.seed, specs, noise, report);
    } else {
      // The call's prompts (one per request; a request's rows share it), all of one token count
      // (the batch key), so the rows run as one group of tim::text::sample_each_prompt_alone.
      std::vector<serve::Job*> prompts;
      for (std::int64_t b = 0; b < B; ++b) {
        serve::Job* job = call.jobs[static_cast<std::size_t>(b)];
        auto slot = std::find(prompts.begin(), prompts.end(), job) - prompts.begin();
        if (slot == static_cast<std::ptrdiff_t>(prompts.size())) {
          encode(*job);
          prompts.push_back(job);
        }
        specs.push_back({.index = call.sample_indices[static_cast<std::size_t>(b)], .caption = slot});
      }
      const auto L = prompts.front()->cap_feats.dim(1), Dc = prompts.front()->cap_feats.dim(2);
      CaptionFeatures captions;
      captions.cap_feats = tim::Tensor<float>::empty({static_cast<std::int64_t>(prompts.size()), L, Dc});
      for (std::size_t j = 0; j < prompts.size(); ++j) {
        const serve::Job& job = *prompts[j];
        tim::check(job.cap_feats.dim(1) == L, "internal error: prompts of ", job.cap_feats.dim(1), " and ", L,
                   " tokens in one sampler call");
        std::copy_n(job.cap_feats.data(), L * Dc, captions.cap_feats.data() + static_cast<std::int64_t>(j) * L * Dc);
        // The null caption (the empty prompt framed to L tokens) is the same for every prompt of
        // L tokens; checked, since the call guides every row with the first one's.
        tim::check(std::memcmp(job.null_cap_feats.data(), prompts.front()->null_cap_feats.data(),
                               static_cast<std::size_t>(L * Dc) * sizeof(float)) == 0,
                   "internal error: two prompts of ", L, " tokens got different null captions");
        captions.lengths.push_back(L);
      }
      captions.null_cap_feats = prompts.front()->null_cap_feats;
      const auto noise = initial_noise_of(specs, call.seed, model.config(), s);
      result = generate_captioned(model, s, call.seed, specs, noise, report, captions, /*per_prompt=*/true,
                                  /*keep_trajectory=*/false);
    }
    tim::check(!result.cancelled, "cancelled: every client of the sampler call went away");
    const auto latents = tim::cast<float>(result.x);
    const std::int64_t C = latents.dim(1), H = latents.dim(2), W = latents.dim(3), per_sample = C * H * W;
    std::vector<tim::Tensor<float>> images;
    for (std::int64_t b = 0; b < B; ++b) {
      auto one = tim::Tensor<float>::empty({1, C, H, W});
      std::copy_n(latents.data() + b * per_sample, per_sample, one.data());
      images.push_back(vae.empty() ? std::move(one) : vae.decode_one(one));
    }
    return images;
  }
};

std::string class_text(const serve::ModelFacts& facts, std::int64_t label) {
  if (label == facts.num_classes) return "unconditional";
  if (label < static_cast<std::int64_t>(facts.class_names.size())) return facts.class_names[static_cast<std::size_t>(label)];
  return "class " + std::to_string(label);
}

json settings_json(const tim::SampleSettings& s) {
  return {{"steps", s.steps.value},
          {"cfg_scale", s.cfg_scale.value},
          {"guidance_low", s.guidance_low.value},
          {"guidance_high", s.guidance_high.value},
          {"stochasticity", s.stochasticity.value},
          {"transport", std::string(tim::transport_name(s.transport.value))},
          {"t_max", s.t_max.value},
          {"t_min", s.t_min.value},
          {"schedule", s.schedule.value.describe()},
          {"mode", std::string(tim::sample_mode_name(s.mode.value))}};
}

void run_serve(const ServeOptions& o) {
  // SIGTERM and SIGINT are taken by one thread (signal_thread below): blocked before any other
  // thread (OpenMP's included) starts, so none of them is killed by the default action.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  apply_threads(o.compute);
  check_compute_options(o.compute, /*cpu_network=*/true);
  tim::check(!o.compute.cuda(), "tim serve runs on the CPU for now; --device cuda is not supported yet");
  tim::check(o.batch_size >= 1 && o.batch_size <= 1024, "--batch-size must be in [1, 1024], got ", o.batch_size);
  tim::check(o.port >= 0 && o.port <= 65535, "--port must be in [0, 65535], got ", o.port);
  tim::check(o.http_threads >= 1 && o.http_threads <= 1024, "--http-threads must be in [1, 1024], got ",
             o.http_threads);
  tim::check(o.limits.max_n >= 1 && o.limits.max_steps >= 1 && o.limits.max_pixels >= 1 && o.limits.max_queue >= 1 &&
                 o.limits.max_body_bytes >= 1,
             "the --max-* limits must be at least 1");

  tim::check(o.text_encoder.empty() || o.max_length >= 1, "--max-length must be at least 1 (room for BOS), got ",
             o.max_length);
  tim::check(!o.text_encoder.empty() || (!given(o.max_length_option) && !given(o.hidden_state_option)),
             "--max-length and --hidden-state need --text-encoder DIR");
  const auto hidden_state = tim::text::parse_hidden_state(o.hidden_state, "--hidden-state");

  ModelOptions model_options = o.model;
  if (model_options.model_path.empty()) model_options.model_path = default_model_path();
  auto served = std::make_unique<Served>();
  served->model = Generator::load(model_options, o.compute);
  served->model_path = model_options.model_path;
  served->threads = given(o.compute.threads_option) ? o.compute.threads : tim::default_num_threads();
  const Generator& generator = served->model;
  const bool text = generator.text_to_image();
  tim::check(!text || !o.text_encoder.empty(), model_options.model_path, " is a text-to-image (T2I) TiM: its "
             "requests are prompts, so give --text-encoder DIR (the Gemma-3 folder that encodes them, as for tim "
             "sample --prompt)");
  tim::check(text || o.text_encoder.empty(), "--text-encoder needs a text-to-image model; ", model_options.model_path,
             " is a class-conditional (C2I) TiM (its requests name classes)");
  if (text) {
    try {
      served->encoder.emplace(tim::text::PromptEncoder::open(o.text_encoder));
    } catch (const tim::Error& e) {
      tim::fail("--text-encoder '", o.text_encoder, "': ", e.what());
    }
    tim::check(served->encoder->config().hidden == generator.caption_dim(), "--text-encoder '", o.text_encoder,
               "': its hidden size is ", served->encoder->config().hidden, ", the model's caption features have "
               "cap_dim ", generator.caption_dim());
    served->text_encoder_path = o.text_encoder;
    served->max_length = o.max_length;
    served->hidden_state = hidden_state;
  }
  const auto& c = generator.config();
  if (!o.vae_path.empty()) served->vae = load_vae(o.vae_path, c.in_channels, {.tile = 0});
  tim::check(!served->vae.empty() || c.in_channels == 1 || c.in_channels == 3, "this model's latents have ",
             c.in_channels, " channels, which need a decoder to become images: give --vae");
  serve::ModelFacts& facts = served->facts;
  facts.id = fs::path(model_options.model_path).stem().string();
  facts.metadata = generator.metadata();
  facts.text_to_image = text;
  facts.num_classes = generator.num_classes();
  if (!text) facts.class_names = class_names_of(facts.metadata, facts.num_classes);
  facts.channels = c.in_channels;
  facts.patch = c.patch;
  facts.scale = served->vae.empty() ? 1 : served->vae.scale;
  // The defaults must make a request: checked now, so a bad checkpoint fails at start.
  const auto defaults =
      serve::parse_generation_request(text ? "{\"prompt\": \"a\"}" : "{\"class\": 0}", facts, o.limits);

  const std::uint64_t server_seed = o.seed_option->count() > 0 ? o.seed : std::random_device{}() * 4294967296ull +
                                                                            std::random_device{}();
  std::atomic<std::uint64_t> next_index{0};
  Served* model = served.get();
  serve::Batcher batcher([model](const serve::BatchCall& call, const std::function<bool()>& keep_going) {
    return model->run(call, keep_going);
  }, o.batch_size, o.limits.max_queue);

  httplib::Server server;
  const int http_threads = o.http_threads;
  server.new_task_queue = [http_threads] { return new httplib::ThreadPool(static_cast<std::size_t>(http_threads)); };
  server.set_payload_max_length(o.limits.max_body_bytes);
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server on
  // the same port would start and take half of the first one's connections.
  int listening_socket = -1;  // the last socket cpp-httplib made to bind (the one it listens on)
  server.set_socket_options([&listening_socket](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listening_socket = sock;
  });
  std::atomic<bool> draining{false};
  std::atomic<int> in_flight{0};

  server.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    request_start = Clock::now();
    if (o.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string header = req.get_header_value("Authorization");
    if (constant_time_equal(header, "Bearer " + o.api_key)) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401, "authentication_error", "missing or wrong API key: send 'Authorization: Bearer KEY'");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - request_start).count();
    char line[160];
    std::snprintf(line, sizeof line, "\" %d %zu %.1fms\n", res.status, res.body.size(), ms);
    std::cerr << utc_now() << ' ' << req.remote_addr << ':' << req.remote_port << " \"" << req.method << ' '
              << (req.path.size() > 200 ? req.path.substr(0, 200) + "..." : req.path) << line << std::flush;
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string what = res.status == 404   ? "no such endpoint (POST /v1/images/generations, GET /health, GET /v1/models)"
                             : res.status == 413 ? "the request body is larger than the server's limit (--max-body)"
                                                 : "the request could not be served";
    send_error(res, res.status, res.status == 413 ? "request_too_large" : "invalid_request_error", what);
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    std::string what = "internal error";
    try {
      if (error) std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, 500, "server_error", what);
  });

  server.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"status", draining ? "draining" : "ok"},
                         {"queued_images", batcher.queued()},
                         {"sampler_calls", batcher.calls()},
                         {"images_sampled", batcher.rows_sampled()}}
                        .dump(),
                    "application/json");
  });
  server.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
    json about = {{"kind", text ? "text-to-image" : "class-conditional"},
                  {"default_size", std::to_string(defaults.width * facts.scale) + "x" +
                                       std::to_string(defaults.height * facts.scale)},
                  {"decoder", served->vae.description},
                  {"batch_size", o.batch_size},
                  {"defaults", settings_json(defaults.settings)}};
    if (text) {
      about["text_encoder"] = served->encoder->config().describe();
      about["max_length"] = served->max_length;
      about["hidden_state"] = o.hidden_state;
    } else {
      about["num_classes"] = facts.num_classes;
      about["class_names"] = facts.class_names;
    }
    json model_json = {{"id", facts.id}, {"object", "model"}, {"created", 0}, {"owned_by", "tim"}, {"tim", about}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model_json})}}.dump(-1, ' ', false,
                                                                                        json::error_handler_t::replace),
                    "application/json");
  });
  server.Post("/v1/images/generations", [&](const httplib::Request& req, httplib::Response& res) {
    if (draining) return send_error(res, 503, "server_shutting_down", "the server is shutting down");
    ++in_flight;
    struct Done {
      std::atomic<int>& count;
      ~Done() { --count; }
    } done{in_flight};
    auto job = std::make_shared<serve::Job>();
    try {
      job->request = serve::parse_generation_request(req.body, facts, o.limits);
    } catch (const tim::Error& e) {
      return send_error(res, 400, "invalid_request_error", e.what());
    }
    serve::GenerationRequest& r = job->request;
    std::vector<std::string> warnings;
    if (text) {  // the prompt's tokens: their count goes into the batch key; too many are cut, as tim sample cuts them
      try {
        const auto framed = served->encoder->tokenizer().frame(r.prompt, served->max_length);
        job->caption_tokens = framed.length;
        job->prompt_truncated = framed.truncated;
      } catch (const tim::Error& e) {
        return send_error(res, 400, "invalid_request_error", std::string("field 'prompt': ") + e.what());
      }
      if (job->prompt_truncated) {
        warnings.push_back("the prompt has more than " + std::to_string(served->max_length - 1) +
                           " tokens and was truncated to --max-length " + std::to_string(served->max_length) +
                           " (BOS included), as tim sample truncates it");
        std::cerr << "tim serve: warning: a prompt was truncated to --max-length " << served->max_length << ": "
                  << truncated(r.prompt, 60) << '\n';
      }
    }
    job->seed = r.seed.value_or(server_seed);
    const std::uint64_t first = r.seed ? r.first_index : next_index.fetch_add(static_cast<std::uint64_t>(r.n));
    for (std::int64_t i = 0; i < r.n; ++i) job->sample_indices.push_back(first + static_cast<std::uint64_t>(i));
    r.batch_key = serve::batch_key_of(r.settings, r.height, r.width, job->seed, job->caption_tokens);
    if (!batcher.submit(job))
      return send_error(res, 429, "queue_full", "the server has " + std::to_string(batcher.queued()) +
                                                    " images queued (limit --max-queue " +
                                                    std::to_string(o.limits.max_queue) + "); try again later");
    const int fd = connection_socket(req);
    {
      std::unique_lock lock(job->mutex);
      while (!job->finished()) {
        job->changed.wait_for(lock, std::chrono::milliseconds(50));
        if (!job->finished() && fd >= 0 && peer_closed(fd)) {
          lock.unlock();
          batcher.cancel(job);
          res.status = 499;  // nginx's "client closed request", for the access log; nothing is sent
          return;
        }
      }
    }
    if (job->failed) return send_error(res, 500, "server_error", "sampling failed: " + job->error);
    json data = json::array();
    const std::int64_t width = r.width * facts.scale, height = r.height * facts.scale;
    const RunRecord run = served_record(r.settings, job->seed, served->model_path, o.vae_path,
                                        served->text_encoder_path, served->model.device());
    for (std::int64_t i = 0; i < r.n; ++i) {
      const auto& image = job->images[static_cast<std::size_t>(i)];
      for (std::int64_t k = 0; k < image.numel(); ++k)
        if (!std::isfinite(image.data()[k]))
          return send_error(res, 500, "server_error", "image " + std::to_string(i) + " (sample index " +
                                                          std::to_string(job->sample_indices[i]) +
                                                          ") has non-finite values (NaN or Inf)");
      const std::uint64_t index = job->sample_indices[static_cast<std::size_t>(i)];
      if (text) {  // as tim sample records caption 0 of a run of one --prompt
        const auto png = png_bytes(sample_image(image, 0, /*text_to_image=*/true),
                                   sample_png_text(run, {.index = index, .label = std::nullopt,
                                                         .prompt = truncated(r.prompt, 1000), .caption_row = 0},
                                                   width, height));
        data.push_back({{"b64_json", base64(png)}, {"seed", job->seed}, {"sample_index", index}, {"prompt", r.prompt}});
      } else {
        const std::int64_t label = r.labels[static_cast<std::size_t>(i)];
        const auto png = png_bytes(sample_image(image, 0, /*text_to_image=*/false),
                                   sample_png_text(run, {.index = index, .label = label,
                                                         .prompt = class_text(facts, label),
                                                         .caption_row = std::nullopt},
                                                   width, height));
        data.push_back({{"b64_json", base64(png)},
                        {"seed", job->seed},
                        {"sample_index", index},
                        {"class", label},
                        {"class_name", class_text(facts, label)}});
      }
      if (r.return_latents) {  // the float values before quantisation, little-endian float32 (C, H, W)
        const auto* bytes = reinterpret_cast<const unsigned char*>(image.data());
        data.back()["latents_b64"] = base64({bytes, bytes + image.numel() * sizeof(float)});
        data.back()["latents_shape"] = {image.dim(1), image.dim(2), image.dim(3)};
      }
    }
    json about = {{"model", facts.id}, {"size", std::to_string(width) + "x" + std::to_string(height)},
                  {"batch_size", o.batch_size}, {"settings", settings_json(r.settings)}};
    if (text) {
      about["prompt_tokens"] = job->caption_tokens;
      about["prompt_truncated"] = job->prompt_truncated;
    }
    if (!warnings.empty()) about["warnings"] = warnings;
    json body = {{"created", static_cast<std::int64_t>(std::time(nullptr))}, {"data", std::move(data)}, {"tim", about}};
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  });

  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  tim::check(port > 0, "cannot listen on ", o.host, ":", o.port, " (in use, or not an address of this "
             "machine)");
  serve::widen_listen_backlog(listening_socket);  // a burst of clients waits in the queue (serve_http.hpp)
  std::cerr << "tim serve: " << generator.describe() << (served->vae.empty() ? "" : "; decoder ")
            << served->vae.description
            << (text ? "; text encoder " + served->encoder->config().describe() + ", " + served->encoder->weight_dtype() +
                           " weights, prompts of up to " + std::to_string(served->max_length) + " tokens"
                     : std::string())
            << "; batch size " << o.batch_size << ", seed " << server_seed
            << (o.api_key.empty() ? "" : ", API key required") << '\n'
            << "tim serve: listening on http://" << o.host << ":" << port << std::endl;

  std::thread signal_thread([&] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    draining = true;
    std::cerr << "tim serve: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
              << ": finishing the requests in flight, then exiting" << std::endl;
    while (in_flight > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    server.stop();
  });
  server.listen_after_bind();
  signal_thread.join();
  batcher.drain();
  std::cerr << "tim serve: stopped" << std::endl;
}

}  // namespace

Subcommand add_serve(CLI::App& app) {
  auto owner = std::make_shared<ServeOptions>();
  ServeOptions& o = *owner;
  auto* command = app.add_subcommand(
      "serve", "Serve a model over HTTP (class-conditional, or text-to-image with --text-encoder): POST "
               "/v1/images/generations (OpenAI images format), GET /health, GET /v1/models (docs/serve.md)");
  add_model_options(*command, o.model, ModelArgument::optional_option);
  command->add_option("--vae", o.vae_path, "Decode the latents with this VAE (as tim sample --vae)");
  command->add_option("--text-encoder", o.text_encoder,
                      "Text-to-image models: the Gemma-3 folder (config.json, model.safetensors, tokenizer.model) "
                      "that encodes the requests' prompts, loaded once (as tim sample --text-encoder)");
  o.max_length_option = command->add_option("--max-length", o.max_length,
                                            "Tokens per prompt, BOS included; longer prompts are truncated, with a "
                                            "warning in the answer (default 256, as tim sample)");
  o.hidden_state_option = command->add_option("--hidden-state", o.hidden_state,
                                              "Which encoder state the captions are: last (default) or penultimate "
                                              "(as tim sample)");
  command->add_option("--host", o.host, "Address to listen on (default 127.0.0.1: this machine only)");
  command->add_option("-p,--port", o.port, "Port (default 8000; 0: any free port, printed on stderr)");
  command->add_option("--api-key", o.api_key,
                      "Require 'Authorization: Bearer KEY' on every request but GET /health");
  command->add_option("--batch-size", o.batch_size,
                      "Most rows of a sampler call; waiting requests with equal settings and seed share one "
                      "(default 8; 1: no sharing)");
  o.seed_option = command->add_option("--seed", o.seed,
                                      "Seed of requests without one (default: random, printed at start)");
  command->add_option("--http-threads", o.http_threads, "Connections served at once (default 32)");
  command->add_option("--max-body", o.limits.max_body_bytes, "Largest request body in bytes (default 65536)");
  command->add_option("--max-n", o.limits.max_n, "Most images per request (default 16)");
  command->add_option("--max-steps", o.limits.max_steps, "Most sampling steps (default 1000)");
  command->add_option("--max-pixels", o.limits.max_pixels, "Most pixels per image (default 1048576)");
  command->add_option("--max-queue", o.limits.max_queue, "Most images queued over all requests (default 256)");
  add_compute_options(*command, o.compute);
  return {command, [owner] { run_serve(*owner); }};
}

}  // namespace tim_cli
