//! The summary row's upsert, rendered for each backend from its [`Table`].
//!
//! Both dialects say the same thing: insert the row, or on a key conflict set
//! each column by its [`Rule`]. They differ only in spelling, and that is all
//! this module decides: SQLite's two-argument `MAX`/`MIN` are PostgreSQL's
//! `GREATEST`/`LEAST`; SQLite binds rows as `(?, ...)` tuples (the caller
//! adds them between [`sqlite`]'s head and tail) while PostgreSQL binds one
//! array per column (`$n::type[]`) and expands them with `UNNEST`. Both accept
//! `excluded` for the proposed row (PostgreSQL folds unquoted `EXCLUDED`).
//!
//! A nullable key compares through `COALESCE(stored, '')`: NULL then loses to
//! any key, as `None` does in the fold, and a new NULL never wins.

use super::row_rule::{Column, Rule, SqlType, Table};

/// An SQL dialect the store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite 3.35 or later.
    Sqlite,
    /// PostgreSQL 9.5 or later.
    Postgres,
}

/// The SQLite upsert around its rows: `head` ends in `VALUES `, the caller
/// appends the `(?, ...)` tuples, then `tail` (`ON CONFLICT ...`).
pub(crate) fn sqlite(table: &Table) -> (String, String) {
    (
        format!("{} VALUES ", insert_into(table)),
        on_conflict(table, Dialect::Sqlite),
    )
}

/// The PostgreSQL upsert: every column bound as one array, in column order.
pub(crate) fn postgres(table: &Table) -> String {
    let arrays: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = match c.sql_type {
                SqlType::Text => "text",
                SqlType::Int8 => "int8",
            };
            format!("${}::{ty}[]", i + 1)
        })
        .collect();
    format!(
        "{} SELECT * FROM UNNEST({}){}",
        insert_into(table),
        arrays.join(", "),
        on_conflict(table, Dialect::Postgres)
    )
}

/// `INSERT INTO table (a, b, ...)`.
fn insert_into(table: &Table) -> String {
    let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    format!("INSERT INTO {} ({})", table.name, names.join(", "))
}

/// ` ON CONFLICT (key) DO UPDATE SET a = ..., ...`: every column but the key
/// and `First` ones, which keep the stored value.
fn on_conflict(table: &Table, dialect: Dialect) -> String {
    let sets: Vec<String> = table
        .columns
        .iter()
        .filter_map(|c| set_expr(table, c, dialect).map(|e| format!("{} = {e}", c.name)))
        .collect();
    format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        table.key().name,
        sets.join(", ")
    )
}

/// The new value of `c` when the row exists; `None` leaves it as stored.
fn set_expr(table: &Table, c: &Column, dialect: Dialect) -> Option<String> {
    let (t, n) = (table.name, c.name);
    let (max, min) = match dialect {
        Dialect::Sqlite => ("MAX", "MIN"),
        Dialect::Postgres => ("GREATEST", "LEAST"),
    };
    Some(match c.rule {
        Rule::Key | Rule::First => return None,
        // NULL would win with SQLite's MAX and lose with GREATEST: a nullable
        // Max is the column following itself, NULL counting as the least.
        Rule::Max if c.nullable => follow(table, c, c),
        Rule::Max => format!("{max}({t}.{n}, excluded.{n})"),
        Rule::Min => format!("{min}({t}.{n}, excluded.{n})"),
        Rule::By(key) => follow(table, c, table.column(key)?),
    })
}

/// `CASE WHEN` the proposed `key` is greater `THEN` the proposed `c` `ELSE`
/// the stored one.
fn follow(table: &Table, c: &Column, key: &Column) -> String {
    let (t, n, k) = (table.name, c.name, key.name);
    let stored_key = if key.nullable {
        format!("COALESCE({t}.{k}, '')")
    } else {
        format!("{t}.{k}")
    };
    format!("CASE WHEN excluded.{k} > {stored_key} THEN excluded.{n} ELSE {t}.{n} END")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::values_sql;
    use crate::task::TaskDelta;

    /// The `SET` list the hand-written statements had before the rule was
    /// written once (their order was the only difference between them, bar
    /// `MAX`/`GREATEST`), in column order.
    fn task_sets(max: &str, min: &str) -> String {
        [
            "state = CASE WHEN excluded.state_key > tasks.state_key \
             THEN excluded.state ELSE tasks.state END"
                .to_owned(),
            format!("attempts = {max}(tasks.attempts, excluded.attempts)"),
            format!("first_seen = {min}(tasks.first_seen, excluded.first_seen)"),
            format!("last_update = {max}(tasks.last_update, excluded.last_update)"),
            "worker_id = CASE WHEN excluded.worker_key > COALESCE(tasks.worker_key, '') \
             THEN excluded.worker_id ELSE tasks.worker_id END"
                .to_owned(),
            "last_error = CASE WHEN excluded.error_key > COALESCE(tasks.error_key, '') \
             THEN excluded.last_error ELSE tasks.last_error END"
                .to_owned(),
            format!("state_key = {max}(tasks.state_key, excluded.state_key)"),
            "worker_key = CASE WHEN excluded.worker_key > COALESCE(tasks.worker_key, '') \
             THEN excluded.worker_key ELSE tasks.worker_key END"
                .to_owned(),
            "error_key = CASE WHEN excluded.error_key > COALESCE(tasks.error_key, '') \
             THEN excluded.error_key ELSE tasks.error_key END"
                .to_owned(),
        ]
        .join(", ")
    }

    const TASK_COLUMNS: &str = "task_id, task_type, state, attempts, first_seen, last_update, \
         worker_id, last_error, state_key, worker_key, error_key";

    #[test]
    fn sqlite_task_upsert() {
        let (head, tail) = sqlite(&TaskDelta::TABLE);
        let sql = values_sql(&head, 2, TaskDelta::TABLE.columns.len(), &tail);
        assert_eq!(
            sql,
            format!(
                "INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?),\
                 (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (task_id) DO UPDATE SET {}",
                task_sets("MAX", "MIN")
            )
        );
    }

    #[test]
    fn postgres_task_upsert() {
        assert_eq!(
            postgres(&TaskDelta::TABLE),
            format!(
                "INSERT INTO tasks ({TASK_COLUMNS}) SELECT * FROM UNNEST($1::text[], \
                 $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], \
                 $8::text[], $9::text[], $10::text[], $11::text[]) \
                 ON CONFLICT (task_id) DO UPDATE SET {}",
                task_sets("GREATEST", "LEAST")
            )
        );
    }

    #[test]
    fn each_rule_in_each_dialect() {
        const T: Table = Table {
            name: "t",
            columns: &[
                col("id", SqlType::Text, false, Rule::Key),
                col("born", SqlType::Int8, false, Rule::First),
                col("hi", SqlType::Int8, false, Rule::Max),
                col("lo", SqlType::Text, false, Rule::Min),
                col("v", SqlType::Int8, true, Rule::By("k")),
                col("k", SqlType::Text, false, Rule::Max),
                col("w", SqlType::Text, true, Rule::Max),
            ],
        };
        const fn col(name: &'static str, sql_type: SqlType, nullable: bool, rule: Rule) -> Column {
            Column {
                name,
                sql_type,
                nullable,
                rule,
            }
        }
        assert_eq!(T.check(), Ok(()));
        let sets = |max: &str, min: &str| {
            format!(
                " ON CONFLICT (id) DO UPDATE SET hi = {max}(t.hi, excluded.hi), \
                 lo = {min}(t.lo, excluded.lo), \
                 v = CASE WHEN excluded.k > t.k THEN excluded.v ELSE t.v END, \
                 k = {max}(t.k, excluded.k), \
                 w = CASE WHEN excluded.w > COALESCE(t.w, '') THEN excluded.w ELSE t.w END"
            )
        };
        assert_eq!(
            sqlite(&T),
            (
                "INSERT INTO t (id, born, hi, lo, v, k, w) VALUES ".to_owned(),
                sets("MAX", "MIN")
            )
        );
        assert_eq!(
            postgres(&T),
            format!(
                "INSERT INTO t (id, born, hi, lo, v, k, w) SELECT * FROM UNNEST($1::text[], \
                 $2::int8[], $3::int8[], $4::text[], $5::int8[], $6::text[], $7::text[]){}",
                sets("GREATEST", "LEAST")
            )
        );
    }
}
