// The default connector: opens libpq connections with the pool's settings, pings with an empty
// statement, and resets a returned connection according to reset_on_return.

#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::pool {
namespace {

class libpq_connector final : public connector {
 public:
  pg::connection connect(const settings& s, std::uint64_t /*id*/) override {
    pg::connect_options options;
    options.conninfo = s.conninfo;
    options.connect_timeout = s.connect_timeout;
    options.application_name = s.effective_application_name();
    options.statement_timeout = s.statement_timeout;
    pg::connection conn = pg::connection::open(options);
    conn.set_statement_cache_capacity(s.statement_cache);
    return conn;
  }

  bool ping(pg::connection& c, std::uint64_t /*id*/) override { return c.ping(); }

  bool reset(pg::connection& c, std::uint64_t /*id*/, reset_mode mode) override {
    if (c.poisoned()) return false;
    switch (c.tx_status()) {
      case pg::transaction_status::idle:
        break;
      case pg::transaction_status::in_transaction:
      case pg::transaction_status::in_error:
        if (mode == reset_mode::none) return false;
        c.exec("ROLLBACK");
        break;
      case pg::transaction_status::active:  // a result was never read: not worth rescuing
      case pg::transaction_status::unknown:
        return false;
    }
    if (mode == reset_mode::discard_all) {
      c.exec("DISCARD ALL");
      c.forget_statement_cache();
    }
    return c.tx_status() == pg::transaction_status::idle && !c.poisoned();
  }
};

}  // namespace

std::shared_ptr<connector> make_libpq_connector() {
  return std::make_shared<libpq_connector>();
}

}  // namespace sluice::pool
