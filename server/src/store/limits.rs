//! Concurrency and rate limits in the claim, written once for both drivers
//! (the tables and their SQL are the same on SQLite and PostgreSQL).
//!
//! A claim passes over the due tasks a limit holds back in its query: a task
//! with an enabled step on a module that is full ([`blocked_modules_sql`]), or
//! a task that started its own `max_starts_per_minute` runs in the last
//! minute ([`task_rate_sql`]). The query alone cannot stop one batch from
//! taking more than a module's room (each row is judged against the counts
//! before the batch), so when a picked task uses a limited module the driver
//! reads the modules' usage ([`usage_sql`]) and [`admit`] keeps, in claim
//! order, only the tasks that fit. The admitted runs' slots are written
//! (the `module_starts` rows) in the claim's own transaction. On PostgreSQL the claims
//! that touch limited modules take one advisory lock first, so two nodes
//! never both take a module's last slot; SQLite's claims are one writer's.

use super::ModuleUsage;
use std::collections::HashMap;

/// The sliding window of the `*_per_minute` limits, in milliseconds.
pub const LIMIT_WINDOW_MS: i64 = 60_000;

/// The limited modules and their usage, as the columns `path, max_running,
/// max_starts_per_minute, running, starts`; `now` is the query's parameter
/// holding the claim's time in milliseconds (`$1` or `?1`). Both counts start
/// from the module's few slots and look runs up by id: a join could start
/// from every run instead.
pub(super) fn usage_sql(now: &str) -> String {
    format!(
        "SELECT m.path, m.max_running, m.max_starts_per_minute, \
            (SELECT count(*) FROM module_starts AS ms \
             WHERE ms.module = m.path \
               AND EXISTS (SELECT 1 FROM runs AS r WHERE r.id = ms.run_id AND r.status = 'running')) \
            AS running, \
            (SELECT count(*) FROM module_starts AS ms \
             WHERE ms.module = m.path AND ms.started_at > {now} - {LIMIT_WINDOW_MS}) AS starts \
         FROM modules AS m \
         WHERE m.max_running IS NOT NULL OR m.max_starts_per_minute IS NOT NULL"
    )
}

/// A CTE body: the paths of the limited modules that have no room now.
pub(super) fn blocked_modules_sql(now: &str) -> String {
    format!(
        "SELECT path FROM ({}) AS usage \
         WHERE running >= max_running OR starts >= max_starts_per_minute",
        usage_sql(now)
    )
}

/// Whether any module is deactivated or limited (one row, one column), read
/// once per claim: only then can a task be held back by its modules, and
/// only then must the claim look at each due task's steps and their modules
/// ([`not_held_by_modules_sql`], [`uses_limited_sql`]). On most stores, most
/// of the time, none is, and those two walks per due task, which could only
/// find nothing, are a good part of a claim's reads. (`NOT active` reads
/// SQLite's 0/1 and PostgreSQL's boolean alike.)
pub(super) const MODULES_HELD_SQL: &str = "SELECT EXISTS (SELECT 1 FROM modules WHERE NOT active \
        OR max_running IS NOT NULL OR max_starts_per_minute IS NOT NULL)";

/// A condition on the task row `t`: none of its enabled steps names a
/// deactivated module or a full one (the paths in the claim's CTE `blocked`,
/// see [`blocked_modules_sql`]). `fence` ends the subquery: see
/// [`uses_limited_sql`].
pub(super) fn not_held_by_modules_sql(fence: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM steps AS s JOIN modules AS m ON m.path = s.controller \
         WHERE s.task_id = t.id AND s.status = 'scheduled' \
           AND (NOT m.active OR m.path IN (SELECT path FROM blocked)) {fence})"
    )
}

/// A condition on the task row `t`: it may start one more run by its own
/// rate limit.
pub(super) fn task_rate_sql(now: &str) -> String {
    format!(
        "(t.max_starts_per_minute IS NULL OR \
          (SELECT count(*) FROM runs AS r WHERE r.task_id = t.id AND r.started_at > {now} - {LIMIT_WINDOW_MS}) \
          < t.max_starts_per_minute)"
    )
}

/// A column of the picked task row `t`: whether an enabled step of it names
/// a limited module (only then does the claim read usage and call [`admit`]).
///
/// `fence` ends the subquery. On PostgreSQL it is `OFFSET 0`, which keeps
/// the subquery a lookup of the task's own steps: without it, the planner
/// may turn this `EXISTS` (and [`not_held_by_modules_sql`]'s) into a hash
/// of every enabled step of every task (once a module is deactivated, its
/// statistics make that look cheap), read whole by each claim however few
/// tasks it takes. SQLite looks each task's steps up anyway (and needs no
/// fence: it would need a `LIMIT` with it).
pub(super) fn uses_limited_sql(fence: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM steps AS ls JOIN modules AS lm ON lm.path = ls.controller \
         WHERE ls.task_id = t.id AND ls.status = 'scheduled' \
           AND (lm.max_running IS NOT NULL OR lm.max_starts_per_minute IS NOT NULL) {fence})"
    )
}

/// The enabled steps' modules of some tasks, as `task_id, controller`; the
/// tasks' ids are the query's first parameter, as `ids_in` puts them
/// (`= ANY($1)` or `IN (SELECT value FROM json_each(?1))`).
pub(super) fn task_modules_sql(ids_in: &str) -> String {
    format!(
        "SELECT DISTINCT task_id, controller FROM steps \
         WHERE task_id {ids_in} AND status = 'scheduled'"
    )
}

/// Slots that no longer count: older than the window and of runs that are
/// not running. `now` as in [`usage_sql`].
pub(super) fn prune_slots_sql(now: &str) -> String {
    format!(
        "DELETE FROM module_starts WHERE started_at <= {now} - {LIMIT_WINDOW_MS} \
           AND NOT EXISTS (SELECT 1 FROM runs AS r \
                           WHERE r.id = module_starts.run_id AND r.status = 'running')"
    )
}

/// Which of the picked tasks a claim starts, in claim order: a task is
/// admitted when every limited module among its steps' has room left after
/// the tasks admitted before it. Returns the admitted tasks' limited modules
/// by task id (the slots to write); a task absent from `modules_of` uses no
/// limited module and is always admitted.
pub(super) fn admit(
    order: &[i64],
    modules_of: &HashMap<i64, Vec<String>>,
    usage: &[ModuleUsage],
) -> HashMap<i64, Vec<String>> {
    let mut room: HashMap<&str, i64> = usage.iter().map(|u| (u.path.as_str(), u.room())).collect();
    let mut admitted = HashMap::new();
    for id in order {
        let limited: Vec<&String> = modules_of
            .get(id)
            .map(|modules| {
                modules
                    .iter()
                    .filter(|m| room.contains_key(m.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if limited.iter().all(|m| room[m.as_str()] > 0) {
            for m in &limited {
                *room.get_mut(m.as_str()).expect("a limited module") -= 1;
            }
            admitted.insert(*id, limited.into_iter().cloned().collect());
        }
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ModuleLimits;

    fn usage(path: &str, max_running: i64, running: i64) -> ModuleUsage {
        ModuleUsage {
            path: path.into(),
            limits: ModuleLimits {
                max_running: Some(max_running),
                max_starts_per_minute: None,
            },
            running,
            starts_last_minute: 0,
        }
    }

    #[test]
    fn a_batch_takes_no_more_than_a_modules_room_in_claim_order() {
        let modules_of = HashMap::from([
            (1, vec!["mail".to_string()]),
            (2, vec!["mail".to_string(), "other".to_string()]),
            (3, vec!["mail".to_string()]),
        ]);
        let admitted = admit(&[1, 2, 3, 4], &modules_of, &[usage("mail", 3, 1)]);
        assert_eq!(admitted.get(&1), Some(&vec!["mail".to_string()]));
        assert_eq!(
            admitted.get(&2),
            Some(&vec!["mail".to_string()]),
            "only limited modules take slots"
        );
        assert!(!admitted.contains_key(&3), "the module had room for two");
        assert_eq!(admitted.get(&4), Some(&vec![]), "no limited module");
    }

    #[test]
    fn a_task_waits_when_any_of_its_modules_is_full() {
        let modules_of = HashMap::from([(1, vec!["a".to_string(), "b".to_string()])]);
        let admitted = admit(&[1], &modules_of, &[usage("a", 5, 0), usage("b", 1, 1)]);
        assert!(admitted.is_empty());
    }

    #[test]
    fn room_is_the_tighter_limit_and_never_negative() {
        let mut u = usage("a", 5, 2);
        u.limits.max_starts_per_minute = Some(10);
        u.starts_last_minute = 9;
        assert_eq!(u.room(), 1);
        u.running = 7;
        assert_eq!(u.room(), 0);
        assert!(u.holds_back().unwrap().contains("max_running"));
    }
}
