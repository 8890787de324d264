// backend_router: picks the backend of each agent (backend_router.hpp).
//
// Requests are delegated, not relayed: the chosen backend answers the
// original requester itself (its agent_started, its errors, its timeouts),
// and the router keeps no promise and no per-request state.

#include "backend_router.hpp"

#include "agentvisor/log.hpp"
#include "agentvisor/messages.hpp"

#include <caf/all.hpp>

#include <set>
#include <unordered_map>
#include <utility>

namespace agentvisor {

namespace {

struct route {
  std::string backend;
  caf::actor_addr owner;
};

struct router_state {
  backend_router_options opts;
  /// The enabled names, for messages.
  std::vector<std::string> enabled;
  /// Agent (machine) id -> its backend, while its owner lives.
  std::unordered_map<std::string, route> routes;
  /// Monitored owners -> the ids they spawned (some may have moved on to a
  /// newer owner since).
  std::map<caf::actor_addr, std::set<std::string>> owners;
  static inline const char* name = "backend_router";
};

using self_ptr = backend_actor::stateful_pointer<router_state>;

/// The backend called `name` (empty: the default), or the refusal.
caf::expected<std::pair<std::string, backend_actor>> pick(self_ptr self, const std::string& name) {
  auto& st = self->state;
  const auto& want = name.empty() ? st.opts.default_backend : name;
  auto i = st.opts.backends.find(want);
  if (i == st.opts.backends.end())
    return make_error(errc::bad_request, not_enabled_message(want, st.enabled));
  return std::make_pair(i->first, i->second);
}

/// Where messages about agent `id` go: its backend, else the default one.
backend_actor target(self_ptr self, const std::string& id) {
  auto& st = self->state;
  if (auto r = st.routes.find(id); r != st.routes.end())
    if (auto b = st.opts.backends.find(r->second.backend); b != st.opts.backends.end())
      return b->second;
  return st.opts.backends.at(st.opts.default_backend);
}

void remember(self_ptr self, const std::string& id, const std::string& backend,
              const caf::actor& owner) {
  auto& st = self->state;
  auto addr = owner ? owner.address() : caf::actor_addr{};
  auto& r = st.routes[id];
  if (r.owner && r.owner != addr)
    if (auto o = st.owners.find(r.owner); o != st.owners.end())
      o->second.erase(id);
  r = route{backend, addr};
  if (!owner)
    return; // nobody to watch: the route lives until the id is reused
  auto [o, fresh] = st.owners.try_emplace(addr);
  o->second.insert(id);
  if (fresh)
    self->monitor(owner);
}

void forget_owner(self_ptr self, const caf::actor_addr& owner) {
  auto& st = self->state;
  auto o = st.owners.find(owner);
  if (o == st.owners.end())
    return;
  for (const auto& id : o->second)
    if (auto r = st.routes.find(id); r != st.routes.end() && r->second.owner == owner)
      st.routes.erase(r);
  st.owners.erase(o);
}

backend_actor::behavior_type router_impl(self_ptr self, backend_router_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  for (const auto& [name, b] : st.opts.backends)
    st.enabled.push_back(name);
  self->set_down_handler([self](caf::down_msg& dm) { forget_owner(self, dm.source); });
  return {
    [=](spawn_atom, agent_spec& spec, caf::actor& owner) -> caf::result<agent_started> {
      auto b = pick(self, spec.backend);
      if (!b) {
        log::agent(spec.id).warn("spawn refused: {}", view(b.error()).message);
        return std::move(b.error());
      }
      spec.backend = b->first;
      remember(self, spec.id, b->first, owner);
      return self->delegate(b->second, spawn_atom::value, std::move(spec), std::move(owner));
    },
    [=](stop_atom, std::string& id, uint32_t grace_ms) {
      self->send(target(self, id), stop_atom::value, std::move(id), grace_ms);
    },
    [=](kill_atom, std::string& id) { self->send(target(self, id), kill_atom::value, std::move(id)); },
    [=](usage_atom, std::string& id) -> caf::result<agent_usage> {
      auto b = target(self, id);
      return self->delegate(b, usage_atom::value, std::move(id));
    },
    [=](signal_atom, std::string& id, int32_t sig) {
      self->send(target(self, id), signal_atom::value, std::move(id), sig);
    },
    [=](spawn_fault_atom, spawn_fault& f) -> caf::result<uint32_t> {
      // A fault for one agent goes where that agent runs.
      if (f.backend.empty() && !f.agent.empty())
        if (auto r = self->state.routes.find(f.agent); r != self->state.routes.end())
          f.backend = r->second.backend;
      auto b = pick(self, f.backend);
      if (!b)
        return std::move(b.error());
      f.backend = b->first;
      return self->delegate(b->second, spawn_fault_atom::value, std::move(f));
    },
  };
}

} // namespace

std::string not_enabled_message(std::string_view name, const std::vector<std::string>& enabled) {
  std::string list;
  for (const auto& n : enabled)
    list += (list.empty() ? "" : ", ") + n;
  return "backend \"" + std::string{name} + "\" is not enabled here (enabled: " + list + ")";
}

backend_actor spawn_backend_router(caf::actor_system& sys, backend_router_options opts) {
  return sys.spawn(router_impl, std::move(opts));
}

} // namespace agentvisor
