// /healthcheck and /v1/api-docs: what load balancers and humans ask of the service.
#include <unistd.h>

#include "common/time_format.hpp"
#include "common/version.hpp"
#include "worker/content_negotiation.hpp"
#include "worker/http_server.hpp"
#include "worker/openapi_document.hpp"
#include "worker/routes.hpp"

namespace usersd {
namespace {

void healthcheck(App& app, httplib::Response& res) {
  const bool store_ok = app.store->ping().ok();
  const bool draining = app.serving.health_off.load();
  // While draining, the load balancer must see us failing and drop this connection, so it deregisters us.
  if (draining) close_connection_after_response(res);
  send_json(res, store_ok && !draining ? 200 : 503,
            {{"status", draining ? "draining" : store_ok ? "ok" : "unavailable"},
             {"store", store_ok ? "ok" : "unavailable"},
             {"version", version()},
             {"uptimeSeconds", (now_ms() - app.started_ms) / 1000},
             {"pid", getpid()}});
}

std::string html_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A self-contained page (no scripts, no CDN) listing every operation, rendered once from the spec.
std::string render_docs_page(const nlohmann::json& spec) {
  std::string html =
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" +
      html_escape(spec["info"].value("title", "API")) +
      "</title><style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
      "code{background:#f4f4f4;padding:.1rem .3rem}.m{display:inline-block;width:4.5rem;font-weight:bold}"
      "li{margin:.4rem 0}</style></head><body><h1>" +
      html_escape(spec["info"].value("title", "API")) + " <small>" + html_escape(spec["info"].value("version", "")) +
      "</small></h1><p>" + html_escape(spec["info"].value("description", "")) +
      "</p><p>Machine-readable: <a href=\"/v1/api-docs/openapi.json\"><code>/v1/api-docs/openapi.json</code></a> "
      "(OpenAPI " + html_escape(spec.value("openapi", "")) + ")</p><ul>";
  for (const auto& [path, operations] : spec["paths"].items()) {
    for (const auto& [method, op] : operations.items()) {
      if (!op.is_object() || !op.contains("responses")) continue;
      std::string upper = method;
      for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      html += "<li><span class=\"m\">" + upper + "</span><code>" + html_escape(path) + "</code> — " +
              html_escape(op.value("summary", "")) + "</li>";
    }
  }
  return html + "</ul></body></html>";
}

// JSON unless the client ranks HTML strictly higher (browsers send "text/html,...,*/*;q=0.8").
bool prefers_html(const httplib::Request& req) {
  if (!req.has_header("Accept")) return false;
  const std::string accept = req.get_header_value("Accept");
  return quality_of(accept, "text/html") > quality_of(accept, "application/json");
}

}  // namespace

void add_meta_routes(Router& router, App& app) {
  const std::string_view spec_text = embedded::openapi_json();
  const std::string docs_page = render_docs_page(nlohmann::json::parse(spec_text));
  router.add({"GET", "/healthcheck", false, {}, [&app](const auto&, auto& res, auto&) { healthcheck(app, res); }});
  router.add({"GET", "/v1/api-docs", false, {}, [spec_text, docs_page](const auto& req, auto& res, auto&) {
                res.set_header("Vary", "Accept");
                if (prefers_html(req)) {
                  // The page has inline styles only; relax the API's CSP for that and nothing else.
                  replace_header(res, "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
                  res.set_content(docs_page, "text/html; charset=utf-8");
                } else {
                  res.set_content(spec_text.data(), spec_text.size(), "application/json");
                }
              }});
  router.add({"GET", "/v1/api-docs/openapi.json", false, {}, [spec_text](const auto&, auto& res, auto&) {
                res.set_content(spec_text.data(), spec_text.size(), "application/json");
              }});
}

}  // namespace usersd
