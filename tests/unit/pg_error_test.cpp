// SQLSTATE classification and the error classes (conninfo redaction: pg_conninfo_test.cpp).

#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "sluice/pg/error.hpp"

namespace pg = sluice::pg;
using pg::error_kind;

namespace {

struct classification_case {
  std::string_view sqlstate;
  error_kind kind;
  bool poisons;
};

// The table docs/pg.md documents.
constexpr classification_case classification_table[] = {
    {"08000", error_kind::poisoning, true},           // connection_exception
    {"08003", error_kind::poisoning, true},           // connection_does_not_exist
    {"08006", error_kind::poisoning, true},           // connection_failure
    {"08001", error_kind::poisoning, true},           // sqlclient_unable_to_establish_sqlconnection
    {"08004", error_kind::poisoning, true},           // sqlserver_rejected_establishment
    {"08P01", error_kind::poisoning, true},           // protocol_violation
    {"08007", error_kind::outcome_unknown, true},     // transaction_resolution_unknown
    {"57P01", error_kind::poisoning, true},           // admin_shutdown
    {"57P02", error_kind::poisoning, true},           // crash_shutdown
    {"57P03", error_kind::back_pressure, true},       // cannot_connect_now
    {"57P04", error_kind::poisoning, true},           // database_dropped
    {"57P05", error_kind::poisoning, true},           // idle_session_timeout
    {"25P03", error_kind::poisoning, true},           // idle_in_transaction_session_timeout
    {"0A000", error_kind::poisoning, true},           // feature_not_supported
    {"53300", error_kind::back_pressure, false},      // too_many_connections
    {"40001", error_kind::retry_transaction, false},  // serialization_failure
    {"40P01", error_kind::retry_transaction, false},  // deadlock_detected
    {"40003", error_kind::outcome_unknown, false},    // statement_completion_unknown
    {"57014", error_kind::query_canceled, false},     // query_canceled
    {"23505", error_kind::ordinary, false},           // unique_violation
    {"42601", error_kind::ordinary, false},           // syntax_error
    {"40000", error_kind::ordinary, false},           // transaction_rollback (generic)
    {"57000", error_kind::ordinary, false},           // operator_intervention (generic)
    {"57P06", error_kind::ordinary, false},           // not a code PostgreSQL defines
    {"53200", error_kind::ordinary, false},           // out_of_memory
    {"25P02", error_kind::ordinary, false},           // in_failed_sql_transaction
    {"", error_kind::ordinary, false},
    {"0800", error_kind::ordinary, false},
    {"080000", error_kind::ordinary, false},
    {"08x00", error_kind::ordinary, false},
};

}  // namespace

TEST(PgError, ClassificationTable) {
  for (const auto& c : classification_table) {
    SCOPED_TRACE(std::string("SQLSTATE '") + std::string(c.sqlstate) + "'");
    EXPECT_EQ(pg::classify_sqlstate(c.sqlstate), c.kind);
    EXPECT_EQ(pg::sqlstate_poisons_connection(c.sqlstate), c.poisons);
    EXPECT_EQ(pg::sqlstate_is_back_pressure(c.sqlstate), c.kind == error_kind::back_pressure);
    EXPECT_EQ(pg::sqlstate_is_retryable(c.sqlstate), c.kind == error_kind::retry_transaction);
    EXPECT_EQ(pg::sqlstate_outcome_unknown(c.sqlstate), c.kind == error_kind::outcome_unknown);
  }
}

TEST(PgError, KindNames) {
  EXPECT_EQ(pg::to_string(error_kind::ordinary), "ordinary");
  EXPECT_EQ(pg::to_string(error_kind::query_canceled), "query_canceled");
  EXPECT_EQ(pg::to_string(error_kind::poisoning), "poisoning");
  EXPECT_EQ(pg::to_string(error_kind::back_pressure), "back_pressure");
  EXPECT_EQ(pg::to_string(error_kind::retry_transaction), "retry_transaction");
  EXPECT_EQ(pg::to_string(error_kind::outcome_unknown), "outcome_unknown");
}

TEST(PgError, SqlErrorCarriesTheServerFields) {
  const pg::sql_error e("23505", "duplicate key value violates unique constraint \"t_pkey\"",
                        "Key (id)=(1) already exists.", "", "INSERT INTO t VALUES ($1)");
  EXPECT_EQ(e.sqlstate(), "23505");
  EXPECT_EQ(e.message(), "duplicate key value violates unique constraint \"t_pkey\"");
  EXPECT_EQ(e.detail(), "Key (id)=(1) already exists.");
  EXPECT_EQ(e.hint(), "");
  EXPECT_EQ(e.query(), "INSERT INTO t VALUES ($1)");
  EXPECT_EQ(e.kind(), error_kind::ordinary);
  EXPECT_FALSE(e.poisons_connection());
  const std::string what = e.what();
  EXPECT_NE(what.find("23505"), std::string::npos) << what;
  EXPECT_NE(what.find("t_pkey"), std::string::npos) << what;
  EXPECT_NE(what.find("Key (id)=(1)"), std::string::npos) << what;
  EXPECT_NE(what.find("INSERT INTO t"), std::string::npos) << what;
}

TEST(PgError, SqlErrorKindFollowsItsSqlstate) {
  EXPECT_TRUE(pg::sql_error("57P01", "terminating", "", "", "").poisons_connection());
  EXPECT_EQ(pg::sql_error("57P01", "terminating", "", "", "").kind(), error_kind::poisoning);
  EXPECT_EQ(pg::sql_error("57014", "canceled", "", "", "").kind(), error_kind::query_canceled);
  EXPECT_FALSE(pg::sql_error("57014", "canceled", "", "", "").poisons_connection());
  EXPECT_EQ(pg::sql_error("40001", "serialization", "", "", "").kind(),
            error_kind::retry_transaction);
}

TEST(PgError, SqlErrorShortensHugeQueriesInWhatOnly) {
  const std::string query(5000, 'x');
  const pg::sql_error e("42601", "syntax error", "", "", query);
  EXPECT_EQ(e.query(), query);
  EXPECT_LT(std::string(e.what()).size(), 1000U);
}

TEST(PgError, ConnectionErrorAlwaysPoisons) {
  const pg::connection_error plain("connection lost");
  EXPECT_TRUE(plain.poisons_connection());
  EXPECT_EQ(plain.kind(), error_kind::poisoning);
  EXPECT_EQ(plain.sqlstate(), "");

  const pg::connection_error refused("too many clients", "53300");
  EXPECT_TRUE(refused.poisons_connection());
  EXPECT_EQ(refused.kind(), error_kind::back_pressure);
  EXPECT_EQ(refused.sqlstate(), "53300");

  EXPECT_EQ(pg::connection_error("starting up", "57P03").kind(), error_kind::back_pressure);
  EXPECT_EQ(pg::connection_error("lost during COMMIT", "08007").kind(),
            error_kind::outcome_unknown);
  EXPECT_EQ(pg::connection_error("bad password", "28P01").kind(), error_kind::poisoning);
}

TEST(PgError, ConversionErrorNeverPoisons) {
  const pg::conversion_error e("column 'x' is NULL");
  EXPECT_FALSE(e.poisons_connection());
  EXPECT_EQ(e.kind(), error_kind::ordinary);
  EXPECT_STREQ(e.what(), "column 'x' is NULL");
}

TEST(PgError, ErrorsShareOneBase) {
  try {
    throw pg::sql_error("23505", "dup", "", "", "");
  } catch (const pg::error& e) {
    EXPECT_EQ(e.kind(), error_kind::ordinary);
  }
  try {
    throw pg::connection_error("gone");
  } catch (const pg::error& e) {
    EXPECT_TRUE(e.poisons_connection());
  }
}

// ---- SQLSTATE from a refused connection's message ----

TEST(PgError, SqlstateFromVerboseMessage) {
  EXPECT_EQ(pg::sqlstate_from_message("connection to server at \"127.0.0.1\", port 5432 failed: "
                                      "FATAL:  53300: sorry, too many clients already\n"
                                      "LOCATION:  InitProcess, proc.c:362\n"),
            "53300");
  // Translated severity, same layout.
  EXPECT_EQ(pg::sqlstate_from_message("la connexion au serveur a échoué : FATAL:  57P03: le "
                                      "système de bases de données se lance"),
            "57P03");
  EXPECT_EQ(pg::sqlstate_from_message("FATAL:  28P01: password authentication failed for user "
                                      "\"bob\""),
            "28P01");
  // Several attempts: the last one decides.
  EXPECT_EQ(pg::sqlstate_from_message("connection to server at \"::1\" failed: FATAL:  57P03: "
                                      "the database system is starting up\nconnection to server "
                                      "at \"127.0.0.1\" failed: FATAL:  53300: sorry, too many "
                                      "clients already\n"),
            "53300");
}

TEST(PgError, SqlstateFromKnownServerTexts) {
  EXPECT_EQ(pg::sqlstate_from_message("FATAL:  sorry, too many clients already"), "53300");
  EXPECT_EQ(pg::sqlstate_from_message(
                "FATAL:  remaining connection slots are reserved for non-replication superuser "
                "connections"),
            "53300");
  EXPECT_EQ(pg::sqlstate_from_message("FATAL:  too many connections for role \"app\""), "53300");
  EXPECT_EQ(pg::sqlstate_from_message("FATAL:  the database system is starting up"), "57P03");
  EXPECT_EQ(pg::sqlstate_from_message("FATAL:  the database system is shutting down"), "57P03");
  EXPECT_EQ(pg::sqlstate_from_message("FATAL:  the database system is in recovery mode"), "57P03");
  EXPECT_EQ(pg::sqlstate_from_message(
                "FATAL:  the database system is not yet accepting connections\nDETAIL:  "
                "Consistent recovery state has not been yet reached."),
            "57P03");
}

TEST(PgError, SqlstateFromUnrelatedMessagesIsEmpty) {
  EXPECT_EQ(pg::sqlstate_from_message(""), "");
  EXPECT_EQ(pg::sqlstate_from_message("connection to server at \"127.0.0.1\", port 1 failed: "
                                      "Connection refused\n\tIs the server running on that host "
                                      "and accepting TCP/IP connections?"),
            "");
  EXPECT_EQ(pg::sqlstate_from_message("timeout expired"), "");
  // Five characters after two spaces, but not followed by ':'.
  EXPECT_EQ(pg::sqlstate_from_message("FATAL:  ABCDE is not a code"), "");
}
