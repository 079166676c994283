#pragma once

// The whole public API of libsluice in one include: the error root, logging, the version, the
// libpq wrapper (sluice::pg), the pools (sluice::pool) and the scheduler with its built-in
// handlers (sluice::sched). No dependency's headers come with it (libpq's included).
// docs/library.md describes the API by concept.

#include "sluice/error.hpp"
#include "sluice/log.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pg/conninfo.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/pg/params.hpp"
#include "sluice/pg/result.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/pool/settings.hpp"
#include "sluice/sched/backoff.hpp"
#include "sluice/sched/cron.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/sched/task.hpp"
#include "sluice/version.hpp"
