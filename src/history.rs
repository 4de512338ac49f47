//! Deployment history (pure): every deploy, rollback and promote of a pool, and every `try` of
//! images on a temporary copy of it, kept in the Taskcluster secret the worker type's
//! `history_secret` names ([`crate::ops::deployments`] reads and writes it) so that anyone with
//! the same credentials can see it and roll back from any machine (see the README's "Where the
//! history lives").
//!
//! The record is a list; what is live and what a rollback puts back are found by replaying
//! it. A change made outside tc-ami is noticed by comparing the live pool with the last
//! record, and does not break the chain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Region → AMI.
pub type Images = BTreeMap<String, String>;

/// How many deployment records the secret keeps (the oldest go first).
pub const MAX_RECORDS: usize = 200;
/// How many `try` records it keeps besides (the oldest go first): tries never push a
/// deployment, and so a rollback target, out of the history.
pub const MAX_TRY_RECORDS: usize = 50;
/// The layout of the secret this version reads and writes. A secret of another format is an
/// error, never read as if it were this one.
pub const FORMAT: u64 = 1;

/// Where tc-ami kept a pool's history before `history_secret` existed. It is read when the
/// configured secret does not exist yet.
pub fn legacy_secret_name(pool_id: &str) -> String {
    format!("tc-ami/deployments/{pool_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deploy,
    Rollback,
    Promote,
    /// `tc-ami try`: images tried on a temporary pool; not a deployment (the pool is
    /// unchanged), so it never counts for what is live or what a rollback puts back.
    Try,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
            Kind::Promote => "promote",
            Kind::Try => "try",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Increasing number, unique within the pool's history.
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// The Taskcluster clientId that made it.
    pub who: String,
    pub kind: Kind,
    pub worker_type: String,
    pub before: Images,
    pub after: Images,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// A rollback: the seq of the deployment it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<u64>,
    /// A rollback that undid a change made outside tc-ami.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undoes_outside_change: bool,
    /// A promote: the worker type whose live images were promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A try (`after` holds the images tried): where, which tasks, and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tried: Option<Tried>,
    /// The push went out, but the pool could not be shown to hold it afterwards (it was
    /// changed again at once, or could not be read back).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

impl Deployment {
    /// The same event as `other`: every field but the sequence number agrees.
    pub fn same_event(&self, other: &Deployment) -> bool {
        Deployment {
            seq: other.seq,
            ..self.clone()
        } == *other
    }
}

/// What a `try` record holds besides its images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    /// The temporary worker pool the tasks ran in.
    pub pool: String,
    /// `passed`, `failed`, `timed out` or `interrupted`.
    pub outcome: String,
    /// Every task of the task group, with its final state.
    pub tasks: Vec<TriedTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriedTask {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Queue's state: `completed`, `failed`, `exception`, or unresolved ones.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// Oldest first.
    pub records: Vec<Deployment>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReadError {
    #[error("it has no `format` field, so it was not written by tc-ami")]
    NoFormat,
    #[error(
        "it has format {0}, and this tc-ami reads format {FORMAT} only; use the tc-ami release that wrote it, or a newer one"
    )]
    UnknownFormat(String),
    #[error(
        "it holds the history of worker pool {found}, not {wanted}; give each pool its own history_secret"
    )]
    OtherPool { found: String, wanted: String },
    #[error("it has no `deployments` list")]
    NoDeployments,
    #[error("its deployments do not parse: {0}")]
    Unparsable(String),
}

impl History {
    /// Reads the secret's value, written for `pool_id`: its `format` must be [`FORMAT`] and its
    /// `workerPoolId` the pool's.
    pub fn from_secret(value: &Value, pool_id: &str) -> Result<History, ReadError> {
        match value.get("format") {
            None => return Err(ReadError::NoFormat),
            Some(f) if f.as_u64() == Some(FORMAT) => {}
            Some(f) => return Err(ReadError::UnknownFormat(f.to_string())),
        }
        if let Some(found) = value.get("workerPoolId").and_then(Value::as_str)
            && found != pool_id
        {
            return Err(ReadError::OtherPool {
                found: found.to_string(),
                wanted: pool_id.to_string(),
            });
        }
        let deployments = value.get("deployments").ok_or(ReadError::NoDeployments)?;
        let records: Vec<Deployment> = serde_json::from_value(deployments.clone())
            .map_err(|e| ReadError::Unparsable(e.to_string()))?;
        Ok(History { records })
    }

    /// The secret's value: the newest [`MAX_RECORDS`] deployments and [`MAX_TRY_RECORDS`]
    /// tries, in their order.
    pub fn to_secret(&self, pool_id: &str) -> Value {
        let is_try = |r: &&Deployment| r.kind == Kind::Try;
        let tries = self.records.iter().filter(is_try).count();
        let mut drop_tries = tries.saturating_sub(MAX_TRY_RECORDS);
        let mut drop_others = (self.records.len() - tries).saturating_sub(MAX_RECORDS);
        let kept: Vec<&Deployment> = self
            .records
            .iter()
            .filter(|r| {
                let drop = if is_try(r) {
                    &mut drop_tries
                } else {
                    &mut drop_others
                };
                let keep = *drop == 0;
                *drop = drop.saturating_sub(1);
                keep
            })
            .collect();
        serde_json::json!({
            "format": FORMAT,
            "workerPoolId": pool_id,
            "deployments": kept,
        })
    }

    /// The records that changed the pool (every kind but `try`), oldest first.
    pub fn deployments(&self) -> impl DoubleEndedIterator<Item = &Deployment> {
        self.records.iter().filter(|r| r.kind != Kind::Try)
    }

    /// The newest record that changed the pool.
    pub fn last_deployment(&self) -> Option<&Deployment> {
        self.deployments().next_back()
    }

    /// Every deploymentId the history has recorded.
    pub fn deployment_ids(&self) -> impl Iterator<Item = &str> {
        self.records
            .iter()
            .filter_map(|r| r.deployment_id.as_deref())
    }

    pub fn next_seq(&self) -> u64 {
        self.records
            .iter()
            .map(|r| r.seq)
            .max()
            .map_or(1, |m| m + 1)
    }

    /// The deployments in effect, oldest first: each rollback takes back the one it undid.
    pub fn effective(&self) -> Vec<&Deployment> {
        let mut stack: Vec<&Deployment> = Vec::new();
        for r in self.deployments() {
            match (r.kind, r.undoes) {
                (Kind::Rollback, Some(seq)) => {
                    if let Some(pos) = stack.iter().rposition(|d| d.seq == seq) {
                        stack.truncate(pos);
                    }
                }
                (Kind::Rollback, None) if r.undoes_outside_change => {}
                _ => stack.push(r),
            }
        }
        stack
    }

    /// The record of what tc-ami last put in place: the newest deployment (tries never are),
    /// passing over unverified ones whose images are not live (their push was overwritten at
    /// once, e.g. by another tc-ami pushing at the same moment).
    pub fn in_place(&self, live: &Images) -> Option<&Deployment> {
        self.deployments()
            .rev()
            .find(|r| !r.unverified || r.after == *live)
            .or(self.last_deployment())
    }

    /// The seq of the record that describes what is live: what tc-ami last put in place, when
    /// the live images are the ones it put there (else the pool was changed outside tc-ami
    /// since).
    pub fn live_seq(&self, live: &Images) -> Option<u64> {
        self.in_place(live)
            .filter(|r| r.after == *live)
            .map(|r| r.seq)
    }
}

/// The history after adding one record, as [`merge`] makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub history: History,
    /// The record as it stands in `history` (its seq may have changed).
    pub record: Deployment,
    /// Whether `history` differs from the history merged into (false: the record was there).
    pub changed: bool,
}

/// Adds `ours` to `latest`, the history as read back right before writing it: another tc-ami
/// may have recorded deployments since `ours` was numbered. A record already there (the same
/// event) is not added twice. Ours keeps its seq when that is above every seq of `latest`;
/// otherwise it takes the next one. Each process renumbers only its own record, from what it
/// read, so records never change number once written, and the order stays the seq order.
pub fn merge(latest: &History, ours: &Deployment) -> Merged {
    if let Some(there) = latest.records.iter().find(|r| r.same_event(ours)) {
        return Merged {
            history: latest.clone(),
            record: there.clone(),
            changed: false,
        };
    }
    let record = Deployment {
        seq: ours.seq.max(latest.next_seq()),
        ..ours.clone()
    };
    let mut history = latest.clone();
    history.records.push(record.clone());
    Merged {
        history,
        record,
        changed: true,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPlan {
    pub target: Images,
    /// The deployment undone (None: a change made outside tc-ami is undone).
    pub undoes: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RollbackError {
    #[error(
        "no deployment of worker pool {0} recorded by tc-ami: nothing to roll back to; use `rollback --to AMI`"
    )]
    NoHistory(String),
    #[error(
        "worker pool {0} is back at its first recorded deployment: there is nothing earlier to roll back to; use `rollback --to AMI`"
    )]
    NothingEarlier(String),
}

/// What a rollback puts back: the images live before the last deployment in effect. When the
/// live images are not what tc-ami last put there (a change by hand), the images tc-ami last
/// put there. A second rollback goes one further back, never back and forth.
pub fn plan_rollback(
    pool_id: &str,
    history: &History,
    live: &Images,
) -> Result<RollbackPlan, RollbackError> {
    let effective = history.effective();
    let Some(top) = effective.last() else {
        return Err(if history.last_deployment().is_none() {
            RollbackError::NoHistory(pool_id.to_string())
        } else {
            RollbackError::NothingEarlier(pool_id.to_string())
        });
    };
    // What tc-ami last put in place: the newest record's images, whatever its kind.
    let in_place = history.in_place(live).map_or(&top.after, |r| &r.after);
    if in_place != live {
        return Ok(RollbackPlan {
            target: in_place.clone(),
            undoes: None,
        });
    }
    Ok(RollbackPlan {
        target: top.before.clone(),
        undoes: Some(top.seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(pairs: &[(&str, &str)]) -> Images {
        pairs
            .iter()
            .map(|(r, i)| (r.to_string(), i.to_string()))
            .collect()
    }

    fn rec(seq: u64, kind: Kind, before: &str, after: &str, undoes: Option<u64>) -> Deployment {
        Deployment {
            seq,
            time: DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).unwrap(),
            who: "me".into(),
            kind,
            worker_type: "w".into(),
            before: images(&[("us-west-2", before)]),
            after: images(&[("us-west-2", after)]),
            deployment_id: Some(format!("{after}-x")),
            undoes,
            undoes_outside_change: false,
            from: None,
            tried: None,
            unverified: false,
        }
    }

    fn live(ami: &str) -> Images {
        images(&[("us-west-2", ami)])
    }

    #[test]
    fn rollback_goes_back_then_further_back() {
        // seed S; deploy A; deploy B.
        let mut h = History {
            records: vec![
                rec(1, Kind::Deploy, "S", "A", None),
                rec(2, Kind::Deploy, "A", "B", None),
            ],
        };
        let p = plan_rollback("p", &h, &live("B")).unwrap();
        assert_eq!(
            p,
            RollbackPlan {
                target: live("A"),
                undoes: Some(2)
            }
        );
        h.records.push(rec(3, Kind::Rollback, "B", "A", Some(2)));
        assert_eq!(h.live_seq(&live("A")), Some(3));
        // A second rollback goes to S, not back to B.
        let p = plan_rollback("p", &h, &live("A")).unwrap();
        assert_eq!(
            p,
            RollbackPlan {
                target: live("S"),
                undoes: Some(1)
            }
        );
        h.records.push(rec(4, Kind::Rollback, "A", "S", Some(1)));
        assert_eq!(
            plan_rollback("p", &h, &live("S")),
            Err(RollbackError::NothingEarlier("p".into()))
        );
        // Deploying again starts a new chain.
        h.records.push(rec(5, Kind::Deploy, "S", "C", None));
        assert_eq!(
            plan_rollback("p", &h, &live("C")).unwrap().target,
            live("S")
        );
    }

    #[test]
    fn a_change_by_hand_is_undone_first_and_does_not_break_the_chain() {
        let mut h = History {
            records: vec![
                rec(1, Kind::Deploy, "S", "A", None),
                rec(2, Kind::Deploy, "A", "B", None),
            ],
        };
        // Someone put M live by hand.
        assert_eq!(h.live_seq(&live("M")), None);
        let p = plan_rollback("p", &h, &live("M")).unwrap();
        assert_eq!(
            p,
            RollbackPlan {
                target: live("B"),
                undoes: None
            }
        );
        let mut r = rec(3, Kind::Rollback, "M", "B", None);
        r.undoes_outside_change = true;
        h.records.push(r);
        assert_eq!(h.live_seq(&live("B")), Some(3));
        // Then the chain continues: B → A.
        assert_eq!(
            plan_rollback("p", &h, &live("B")).unwrap().target,
            live("A")
        );
    }

    #[test]
    fn a_deploy_after_a_change_by_hand_rolls_back_to_it() {
        let h = History {
            records: vec![
                rec(1, Kind::Deploy, "S", "A", None),
                rec(2, Kind::Deploy, "M", "B", None),
            ],
        };
        assert_eq!(
            plan_rollback("p", &h, &live("B")).unwrap().target,
            live("M")
        );
    }

    #[test]
    fn no_history() {
        assert_eq!(
            plan_rollback("p", &History::default(), &live("A")),
            Err(RollbackError::NoHistory("p".into()))
        );
    }

    #[test]
    fn promote_and_explicit_rollbacks_are_new_states() {
        let mut h = History {
            records: vec![rec(1, Kind::Deploy, "S", "A", None)],
        };
        let mut p = rec(2, Kind::Promote, "A", "P", None);
        p.from = Some("staging".into());
        h.records.push(p);
        // rollback --to X: a rollback that undoes nothing in particular, recorded as a new state.
        h.records.push(rec(3, Kind::Rollback, "P", "X", None));
        assert_eq!(
            h.effective().iter().map(|d| d.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            plan_rollback("p", &h, &live("X")).unwrap().target,
            live("P")
        );
    }

    #[test]
    fn round_trips_through_the_secret_and_caps_its_length() {
        let h = History {
            records: (1..=(MAX_RECORDS as u64 + 5))
                .map(|i| rec(i, Kind::Deploy, "a", "b", None))
                .collect(),
        };
        let v = h.to_secret("p/w");
        assert_eq!(v["format"], FORMAT);
        let back = History::from_secret(&v, "p/w").unwrap();
        assert_eq!(back.records.len(), MAX_RECORDS);
        assert_eq!(back.records[0].seq, 6);
        assert_eq!(back.next_seq(), MAX_RECORDS as u64 + 6);
        assert_eq!(
            History::from_secret(&serde_json::json!({"format": 1, "x": 1}), "p/w"),
            Err(ReadError::NoDeployments)
        );
    }

    #[test]
    fn the_format_and_the_pool_are_checked_on_read() {
        let h = History {
            records: vec![rec(1, Kind::Deploy, "a", "b", None)],
        };
        let mut v = h.to_secret("p/w");
        v["format"] = serde_json::json!(2);
        let err = History::from_secret(&v, "p/w").unwrap_err();
        assert_eq!(err, ReadError::UnknownFormat("2".into()));
        assert!(err.to_string().contains("format 2"), "{err}");
        assert!(err.to_string().contains("reads format 1 only"), "{err}");
        v["format"] = serde_json::json!("1");
        assert_eq!(
            History::from_secret(&v, "p/w"),
            Err(ReadError::UnknownFormat("\"1\"".into()))
        );
        v.as_object_mut().unwrap().remove("format");
        assert_eq!(History::from_secret(&v, "p/w"), Err(ReadError::NoFormat));
        let v = h.to_secret("p/other");
        assert!(matches!(
            History::from_secret(&v, "p/w"),
            Err(ReadError::OtherPool { .. })
        ));
        // Every message is one line.
        for e in [
            ReadError::NoFormat,
            ReadError::UnknownFormat("7".into()),
            ReadError::NoDeployments,
        ] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn unverified_records_round_trip_and_old_records_read_as_verified() {
        let mut r = rec(1, Kind::Deploy, "a", "b", None);
        let plain = serde_json::to_value(&r).unwrap();
        assert!(plain.get("unverified").is_none(), "{plain}");
        r.unverified = true;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["unverified"], true);
        assert_eq!(serde_json::from_value::<Deployment>(v).unwrap(), r);
        assert!(
            !serde_json::from_value::<Deployment>(plain)
                .unwrap()
                .unverified
        );
    }

    #[test]
    fn an_overwritten_unverified_push_is_passed_over() {
        // Two tc-ami pushed at once: #2 (B) went out last and is live; #3 (C) was pushed
        // first, overwritten, and recorded after #2, unverified.
        let mut c = rec(3, Kind::Deploy, "A", "C", None);
        c.unverified = true;
        let h = History {
            records: vec![
                rec(1, Kind::Deploy, "S", "A", None),
                rec(2, Kind::Deploy, "A", "B", None),
                c.clone(),
            ],
        };
        assert_eq!(h.live_seq(&live("B")), Some(2));
        assert_eq!(h.in_place(&live("B")).unwrap().seq, 2);
        // Live C: the unverified push did hold after all.
        assert_eq!(h.live_seq(&live("C")), Some(3));
        // A change by hand: what tc-ami last put in place is B, not the overwritten C.
        assert_eq!(h.live_seq(&live("M")), None);
        assert_eq!(
            plan_rollback("p", &h, &live("M")).unwrap(),
            RollbackPlan {
                target: live("B"),
                undoes: None
            }
        );
        // Only unverified records at the end: the newest stands.
        let only = History { records: vec![c] };
        assert_eq!(only.in_place(&live("X")).unwrap().seq, 3);
    }

    #[test]
    fn merge_appends_renumbers_on_collision_and_is_idempotent() {
        let base = History {
            records: vec![
                rec(1, Kind::Deploy, "S", "A", None),
                rec(2, Kind::Deploy, "A", "B", None),
            ],
        };
        // Nobody wrote in between: ours keeps its seq.
        let ours = rec(3, Kind::Deploy, "B", "C", None);
        let m = merge(&base, &ours);
        assert!(m.changed);
        assert_eq!(m.record, ours);
        assert_eq!(
            m.history.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Merging again (our write went through): nothing changes.
        let again = merge(&m.history, &ours);
        assert!(!again.changed);
        assert_eq!(again.history, m.history);
        assert_eq!(again.record.seq, 3);

        // Another tc-ami recorded #3 first: ours becomes #4, theirs stays #3.
        let theirs = rec(3, Kind::Deploy, "B", "D", None);
        let latest = merge(&base, &theirs).history;
        let m = merge(&latest, &ours);
        assert!(m.changed);
        assert_eq!(m.record.seq, 4);
        assert_eq!(m.history.records[2], theirs);
        assert!(m.history.records[3].same_event(&ours));
        // Ours renumbered is still found as ours (idempotent across rounds).
        assert!(!merge(&m.history, &ours).changed);
        // Both orders of writing keep both records, each once, in seq order.
        let other_way = merge(&merge(&base, &ours).history, &theirs).history;
        for h in [&m.history, &other_way] {
            assert_eq!(h.records.len(), 4);
            assert!(h.records.iter().any(|r| r.same_event(&ours)));
            assert!(h.records.iter().any(|r| r.same_event(&theirs)));
            assert!(h.records.windows(2).all(|w| w[0].seq < w[1].seq));
        }
        // The same merge always gives the same result.
        assert_eq!(merge(&latest, &ours), merge(&latest, &ours));
    }

    #[test]
    fn deployment_ids_lists_every_recorded_id() {
        let mut h = History {
            records: vec![rec(1, Kind::Deploy, "S", "A", None)],
        };
        let mut r = rec(2, Kind::Deploy, "A", "B", None);
        r.deployment_id = None;
        h.records.push(r);
        assert_eq!(h.deployment_ids().collect::<Vec<_>>(), vec!["A-x"]);
    }
    fn tried(seq: u64, after: &str) -> Deployment {
        let mut r = rec(seq, Kind::Try, "B", after, None);
        r.deployment_id = None;
        r.tried = Some(Tried {
            pool: "proj-servo/win2016-try-k3x9q2ab".into(),
            outcome: "failed".into(),
            tasks: vec![TriedTask {
                task_id: "AAAAAAAAQACAAAAAAAAAAA".into(),
                name: Some("tools".into()),
                state: "failed".into(),
            }],
        });
        r
    }

    #[test]
    fn tries_are_not_deployments() {
        let mut h = History {
            records: vec![
                rec(1, Kind::Deploy, "S", "A", None),
                rec(2, Kind::Deploy, "A", "B", None),
                tried(3, "T"),
            ],
        };
        // What is live and what a rollback puts back ignore the try.
        assert_eq!(h.live_seq(&live("B")), Some(2));
        assert_eq!(h.live_seq(&live("T")), None);
        assert_eq!(
            plan_rollback("p", &h, &live("B")).unwrap(),
            RollbackPlan {
                target: live("A"),
                undoes: Some(2)
            }
        );
        assert_eq!(h.last_deployment().map(|d| d.seq), Some(2));
        assert_eq!(h.next_seq(), 4);
        h.records.push(rec(4, Kind::Rollback, "B", "A", Some(2)));
        assert_eq!(h.effective().iter().map(|d| d.seq).collect::<Vec<_>>(), [1]);
        // Only tries: nothing recorded to roll back to.
        let only = History {
            records: vec![tried(1, "T")],
        };
        assert_eq!(
            plan_rollback("p", &only, &live("S")),
            Err(RollbackError::NoHistory("p".into()))
        );
        // Round trip, with the try's fields.
        let back = History::from_secret(&h.to_secret("p"), "p").unwrap();
        assert_eq!(back, h);
        assert_eq!(
            h.to_secret("p")["deployments"][2]["tried"]["tasks"][0]["state"],
            "failed"
        );
    }

    #[test]
    fn tries_never_push_deployments_out_of_the_secret() {
        let mut records = vec![rec(1, Kind::Deploy, "S", "A", None)];
        records.extend((2..=(MAX_TRY_RECORDS as u64 + 11)).map(|i| tried(i, "T")));
        let h = History { records };
        let back = History::from_secret(&h.to_secret("p"), "p").unwrap();
        assert_eq!(back.records.len(), MAX_TRY_RECORDS + 1);
        assert_eq!(back.records[0].seq, 1, "the deployment stays");
        assert_eq!(back.records[1].seq, 12, "the oldest tries go");
        assert_eq!(back.next_seq(), h.next_seq());
    }
}
