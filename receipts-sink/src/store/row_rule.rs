//! How a summary row combines what it holds with new values, written once.
//!
//! The `tasks` row is upserted with values that arrive in any order and more
//! than once, so each of its columns has a [`Rule`]: the greater value wins,
//! the lesser wins, the first stays, or the value follows an ordering key (the
//! one that came with the greater key wins). [`row_rule!`] declares the row's
//! struct from a single table of `column: Type = rule` lines and derives from
//! it everything that has to agree: the in-memory fold (`merge`, used to
//! pre-aggregate a batch), the values in column order (`values`, for binding)
//! and the [`Table`] that `store/upsert.rs` renders into each backend's
//! `INSERT ... ON CONFLICT ... DO UPDATE`. A new column is one line there,
//! plus its value where the row is built and a migration.
//!
//! The table is checked when the crate compiles ([`Table::check`]), so a rule
//! the SQL cannot express the same way as the fold does not build.

/// How a column combines the stored value with a new one. Every rule is
/// commutative and idempotent, which is what makes the row independent of the
/// order and repetition of its inputs.
///
/// Text compares bytewise, in Rust and in the store (SQLite's default
/// collation; PostgreSQL columns compared this way need `COLLATE "C"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The conflict target: equal keys are one row. Exactly one column, not null.
    Key,
    /// Set by the first insert and never changed.
    First,
    /// The greater value wins. On a nullable column NULL is the least value;
    /// nullable `Max` columns must be text, and never hold `''` (the SQL
    /// stands `''` in for NULL when it compares).
    Max,
    /// The lesser value wins. Not nullable: "the least non-null" is not what
    /// `Option`'s order gives, and nothing needs it.
    Min,
    /// Follows the named ordering key, a `Max` column of the same row: the
    /// value that came with the greater key wins.
    By(&'static str),
}

/// A column's type in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlType {
    /// `TEXT`.
    Text,
    /// `BIGINT` (PostgreSQL `int8`, SQLite `INTEGER`).
    Int8,
}

/// One column: its name (the struct field's), store type and rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: &'static str,
    pub(crate) sql_type: SqlType,
    pub(crate) nullable: bool,
    pub(crate) rule: Rule,
}

/// A summary table: its name and columns, in binding order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static [Column],
}

impl Table {
    /// The column named `name`.
    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The conflict target (the table passed [`Table::check`]).
    pub(crate) fn key(&self) -> &Column {
        self.columns
            .iter()
            .find(|c| c.rule == Rule::Key)
            .expect("a checked table has a key")
    }

    /// Whether the SQL renders every rule with the meaning `merge` gives it.
    /// `const` so that [`row_rule!`] can refuse a bad table at build time.
    pub(crate) const fn check(&self) -> Result<(), &'static str> {
        let mut keys = 0;
        let mut i = 0;
        while i < self.columns.len() {
            let c = &self.columns[i];
            match c.rule {
                Rule::Key if c.nullable => return Err("the key column cannot be nullable"),
                Rule::Key => keys += 1,
                Rule::Min if c.nullable => return Err("a Min column cannot be nullable"),
                Rule::Max if c.nullable && !matches!(c.sql_type, SqlType::Text) => {
                    return Err("a nullable Max column must be text");
                }
                Rule::By(key) => match self.find(key) {
                    Some(k) if matches!(k.rule, Rule::Max) => {}
                    Some(_) => return Err("a By column must name a Max column"),
                    None => return Err("a By column names a column the table lacks"),
                },
                _ => {}
            }
            i += 1;
        }
        if keys != 1 {
            return Err("a table needs exactly one Key column");
        }
        Ok(())
    }

    const fn find(&self, name: &str) -> Option<&Column> {
        let mut i = 0;
        while i < self.columns.len() {
            if bytes_eq(self.columns[i].name.as_bytes(), name.as_bytes()) {
                return Some(&self.columns[i]);
            }
            i += 1;
        }
        None
    }
}

/// `a == b`, usable in `const fn`.
const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A column value in the form it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlValue<'a> {
    /// Text, never null.
    Text(&'a str),
    /// Nullable text.
    OptText(Option<&'a str>),
    /// A number.
    Int8(i64),
}

/// A Rust type a row column can have: its store type and bound form.
pub(crate) trait ColumnValue {
    /// The column's type in the store.
    const SQL_TYPE: SqlType;
    /// Whether it may be NULL.
    const NULLABLE: bool;
    /// The value to bind.
    fn sql_value(&self) -> SqlValue<'_>;
}

impl ColumnValue for String {
    const SQL_TYPE: SqlType = SqlType::Text;
    const NULLABLE: bool = false;
    fn sql_value(&self) -> SqlValue<'_> {
        SqlValue::Text(self)
    }
}

impl ColumnValue for Option<String> {
    const SQL_TYPE: SqlType = SqlType::Text;
    const NULLABLE: bool = true;
    fn sql_value(&self) -> SqlValue<'_> {
        SqlValue::OptText(self.as_deref())
    }
}

impl ColumnValue for u32 {
    const SQL_TYPE: SqlType = SqlType::Int8;
    const NULLABLE: bool = false;
    fn sql_value(&self) -> SqlValue<'_> {
        SqlValue::Int8(i64::from(*self))
    }
}

/// Declares a summary row: a struct whose fields are the table's columns, in
/// order, each with its rule (`key`, `first`, `max`, `min` or `by(key_field)`):
///
/// ```ignore
/// row_rule! {
///     /// Docs and derives go on the struct as usual.
///     #[derive(Debug, Clone, PartialEq, Eq)]
///     pub(crate) struct TaskDelta in "tasks" {
///         pub(crate) task_id: String = key,
///         pub(crate) attempts: u32 = max,
///         pub(crate) state: TaskState = by(state_key),
///         pub(crate) state_key: String = max,
///     }
/// }
/// ```
///
/// It also defines `TABLE` (the [`Table`]), `merge` (the fold) and `values`
/// (the columns as [`SqlValue`]s in `TABLE`'s order), and checks the table at
/// build time. Field types implement [`ColumnValue`]; the ordered rules
/// compare with the type's `Ord`, which must agree with the store's order.
macro_rules! row_rule {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $table:literal {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident: $ty:ty = $rule:ident $(($key:ident))?
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field: $ty, )+
        }

        impl $name {
            /// The table this row is upserted into: the columns in binding
            /// order, with their rules.
            pub(crate) const TABLE: $crate::store::row_rule::Table = $crate::store::row_rule::Table {
                name: $table,
                columns: &[$(
                    $crate::store::row_rule::Column {
                        name: stringify!($field),
                        sql_type: <$ty as $crate::store::row_rule::ColumnValue>::SQL_TYPE,
                        nullable: <$ty as $crate::store::row_rule::ColumnValue>::NULLABLE,
                        rule: $crate::store::row_rule::row_rule!(@rule $rule $(($key))?),
                    },
                )+],
            };

            /// Folds `other` in, each column by its rule: what the store's
            /// upsert does when `other` meets the stored row.
            pub(crate) fn merge(&mut self, other: $name) {
                // Every column decides on the values from before the fold, as
                // the right-hand sides of an SQL `SET` do: first by its own
                // value, then each `By` column as its key did (one comparison
                // per key, as a hand-written fold would make).
                let this = &*self;
                $( $crate::store::row_rule::row_rule!(@own this, other, $field, $rule $(($key))?); )+
                $( $crate::store::row_rule::row_rule!(@follow $field, $rule $(($key))?); )+
                $( if $field { self.$field = other.$field; } )+
            }

            /// The column values in the order of [`Self::TABLE`].
            pub(crate) fn values(&self) -> [$crate::store::row_rule::SqlValue<'_>; { [$(stringify!($field)),+].len() }] {
                [$( $crate::store::row_rule::ColumnValue::sql_value(&self.$field), )+]
            }
        }

        const _: () = if let Err(e) = $name::TABLE.check() {
            panic!("{}", e)
        };
    };

    (@rule key) => { $crate::store::row_rule::Rule::Key };
    (@rule first) => { $crate::store::row_rule::Rule::First };
    (@rule max) => { $crate::store::row_rule::Rule::Max };
    (@rule min) => { $crate::store::row_rule::Rule::Min };
    (@rule by($key:ident)) => { $crate::store::row_rule::Rule::By(stringify!($key)) };

    // `let $field = whether other's value replaces this's;` for the rules
    // that look at the column's own value.
    (@own $this:ident, $other:ident, $field:ident, key) => { let $field = false; };
    (@own $this:ident, $other:ident, $field:ident, first) => { let $field = false; };
    (@own $this:ident, $other:ident, $field:ident, max) => { let $field = $other.$field > $this.$field; };
    (@own $this:ident, $other:ident, $field:ident, min) => { let $field = $other.$field < $this.$field; };
    (@own $this:ident, $other:ident, $field:ident, by($key:ident)) => {};
    // The same for `By` columns: the key's decision.
    (@follow $field:ident, by($key:ident)) => { let $field = $key; };
    (@follow $field:ident, $rule:ident) => {};
}

pub(crate) use row_rule;

#[cfg(test)]
mod tests {
    use super::*;

    row_rule! {
        /// One of each rule.
        #[derive(Debug, Clone, PartialEq, Eq)]
        struct Sample in "samples" {
            id: String = key,
            kind: String = first,
            count: u32 = max,
            since: String = min,
            label: Option<String> = by(label_key),
            label_key: Option<String> = max,
        }
    }

    fn sample(kind: &str, count: u32, since: &str, label: Option<(&str, &str)>) -> Sample {
        Sample {
            id: "s".into(),
            kind: kind.into(),
            count,
            since: since.into(),
            label: label.map(|(l, _)| l.to_owned()),
            label_key: label.map(|(_, k)| k.to_owned()),
        }
    }

    #[test]
    fn the_table_is_the_declaration() {
        let names: Vec<_> = Sample::TABLE.columns.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["id", "kind", "count", "since", "label", "label_key"]
        );
        assert_eq!(Sample::TABLE.name, "samples");
        assert_eq!(Sample::TABLE.key().name, "id");
        let label = Sample::TABLE.column("label").unwrap();
        assert_eq!(label.rule, Rule::By("label_key"));
        assert!(label.nullable);
        assert_eq!(
            Sample::TABLE.column("count").unwrap().sql_type,
            SqlType::Int8
        );
        let s = sample("a", 3, "t0", Some(("x", "k1")));
        assert_eq!(
            s.values(),
            [
                SqlValue::Text("s"),
                SqlValue::Text("a"),
                SqlValue::Int8(3),
                SqlValue::Text("t0"),
                SqlValue::OptText(Some("x")),
                SqlValue::OptText(Some("k1")),
            ]
        );
    }

    #[test]
    fn merge_applies_each_rule() {
        let mut a = sample("a", 3, "t5", Some(("x", "k1")));
        a.merge(sample("b", 2, "t1", None));
        // First stays, max and min, and no key loses to a key.
        assert_eq!(a, sample("a", 3, "t1", Some(("x", "k1"))));
        a.merge(sample("c", 9, "t9", Some(("y", "k2"))));
        assert_eq!(a, sample("a", 9, "t1", Some(("y", "k2"))));
        // A follower moves only with its key, whatever its own value.
        a.merge(sample("d", 0, "t9", Some(("z", "k0"))));
        assert_eq!(a.label.as_deref(), Some("y"));
    }

    #[test]
    fn merge_is_commutative_and_idempotent() {
        let parts = [
            sample("a", 1, "t3", None),
            sample("b", 4, "t2", Some(("x", "k2"))),
            sample("c", 2, "t4", Some(("y", "k1"))),
        ];
        let fold = |order: &[usize]| {
            let mut acc = parts[order[0]].clone();
            for &i in &order[1..] {
                acc.merge(parts[i].clone());
                acc.merge(parts[i].clone());
            }
            acc
        };
        let expected = fold(&[0, 1, 2]);
        for order in [[0, 2, 1], [2, 1, 0], [2, 0, 1]] {
            let mut got = fold(&order);
            // The first insert's value stays: the one column that depends on order.
            got.kind = expected.kind.clone();
            assert_eq!(got, expected);
        }
    }

    const fn table(columns: &'static [Column]) -> Table {
        Table { name: "t", columns }
    }

    const fn col(name: &'static str, sql_type: SqlType, nullable: bool, rule: Rule) -> Column {
        Column {
            name,
            sql_type,
            nullable,
            rule,
        }
    }

    #[test]
    fn check_refuses_what_the_sql_cannot_match() {
        use SqlType::{Int8, Text};
        let id = col("id", Text, false, Rule::Key);
        let bad: [(&[Column], &str); 7] = [
            (&[], "exactly one Key"),
            (
                &[col("id", Text, true, Rule::Key)],
                "key column cannot be nullable",
            ),
            (&[id, col("id2", Text, false, Rule::Key)], "exactly one Key"),
            (
                &[id, col("m", Text, true, Rule::Min)],
                "Min column cannot be nullable",
            ),
            (
                &[id, col("n", Int8, true, Rule::Max)],
                "nullable Max column must be text",
            ),
            (&[id, col("v", Text, true, Rule::By("k"))], "lacks"),
            (
                &[
                    id,
                    col("v", Text, true, Rule::By("k")),
                    col("k", Text, false, Rule::Min),
                ],
                "must name a Max column",
            ),
        ];
        for (columns, why) in bad {
            let columns: &'static [Column] = Box::leak(columns.to_vec().into_boxed_slice());
            let err = table(columns).check().unwrap_err();
            assert!(err.contains(why), "{err:?} for {columns:?}");
        }
        let good: &'static [Column] = Box::leak(
            vec![
                id,
                col("v", Text, true, Rule::By("k")),
                col("k", Text, true, Rule::Max),
                col("n", Int8, false, Rule::Min),
            ]
            .into_boxed_slice(),
        );
        assert_eq!(table(good).check(), Ok(()));
    }
}
