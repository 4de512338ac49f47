//! `tc-ami history -w W`: the deployments of W's pool, newest first.

use anyhow::Result;
use serde_json::json;

use crate::commands::Ctx;
use crate::config_dir::load_worker_type;
use crate::history::{History, Images};
use crate::ops::deployments::HistorySecret;
use crate::pool::{definition, live_images};
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};
use crate::text::table;

fn images_text(images: &Images) -> String {
    images
        .iter()
        .map(|(r, i)| format!("{r}={i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table (pure): when, who, what, deployment id, images, and which is live.
pub fn render(history: &History, live: &Images) -> String {
    let live_seq = history.live_seq(live);
    let undone: Vec<u64> = history.records.iter().filter_map(|r| r.undoes).collect();
    let mut rows = Vec::new();
    if live_seq.is_none() {
        rows.push([
            "-".into(),
            "-".into(),
            "outside tc-ami".into(),
            "-".into(),
            images_text(live),
            "live".into(),
        ]);
    }
    for r in history.records.iter().rev() {
        let what = match (&r.from, r.undoes, &r.tried) {
            (_, _, Some(t)) => match t.tasks.len() {
                1 => format!("{}: {} (1 task)", r.kind, t.outcome),
                n => format!("{}: {} ({n} tasks)", r.kind, t.outcome),
            },
            (Some(from), _, _) => format!("{} from {from}", r.kind),
            (None, Some(seq), _) => format!("{} of #{seq}", r.kind),
            _ => r.kind.to_string(),
        };
        let mark = if Some(r.seq) == live_seq {
            "live"
        } else if undone.contains(&r.seq) {
            "rolled back"
        } else {
            ""
        };
        rows.push([
            r.time.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.who.clone(),
            format!(
                "#{} {what}{}",
                r.seq,
                if r.unverified { " (unverified)" } else { "" }
            ),
            r.deployment_id.clone().unwrap_or_else(|| "-".into()),
            images_text(&r.after),
            mark.into(),
        ]);
    }
    table(
        &["WHEN (UTC)", "WHO", "WHAT", "DEPLOYMENT ID", "IMAGES", ""],
        rows,
    )
}

pub async fn run(ctx: &Ctx, worker_type: &str) -> Result<u8> {
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    let secrets = SecretsApi::new(&env)?;
    let live = live_images(&definition(&wm.get_pool(&wt.worker_pool_id).await?));
    let store = HistorySecret::new(&secrets, &wt.worker_pool_id, &wt.history_secret);
    let loaded = store.load().await?;
    if let Some(note) = loaded.legacy_note(&store) {
        ctx.shell.note(&note);
    }
    let history = loaded.history;
    let live_seq = history.live_seq(&live);
    let mut deployments: Vec<serde_json::Value> = history
        .records
        .iter()
        .rev()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["live"] = json!(Some(r.seq) == live_seq);
            v
        })
        .collect();
    if history.records.is_empty() {
        deployments.clear();
    }
    let doc = json!({
        "workerPoolId": wt.worker_pool_id,
        "secret": store.name,
        "live": live,
        "liveIsRecorded": live_seq.is_some(),
        "deployments": deployments,
    });
    if !ctx.shell.is_json() && history.records.is_empty() {
        ctx.shell.note(&format!(
            "no deployment of worker pool {} recorded by tc-ami yet",
            wt.worker_pool_id
        ));
    }
    ctx.shell.result(&render(&history, &live), &doc);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Deployment, Kind};
    use chrono::DateTime;

    fn rec(seq: u64, kind: Kind, after: &str, undoes: Option<u64>) -> Deployment {
        Deployment {
            seq,
            time: DateTime::from_timestamp(1_795_000_000 + seq as i64 * 60, 0).unwrap(),
            who: "alice".into(),
            kind,
            worker_type: "w".into(),
            before: Images::new(),
            after: [("us-west-2".to_string(), after.to_string())].into(),
            deployment_id: Some(format!("{after}-d")),
            undoes,
            undoes_outside_change: false,
            from: None,
            tried: None,
            unverified: false,
        }
    }

    #[test]
    fn table_marks_live_and_rolled_back() {
        let h = History {
            records: vec![
                rec(1, Kind::Deploy, "ami-a", None),
                rec(2, Kind::Deploy, "ami-b", None),
                rec(3, Kind::Rollback, "ami-a", Some(2)),
            ],
        };
        let live: Images = [("us-west-2".to_string(), "ami-a".to_string())].into();
        let t = render(&h, &live);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("WHEN (UTC)"));
        assert!(
            lines[1].contains("#3 rollback of #2") && lines[1].ends_with("live"),
            "{t}"
        );
        assert!(
            lines[2].contains("#2 deploy") && lines[2].ends_with("rolled back"),
            "{t}"
        );
        assert!(
            lines[3].contains("#1 deploy") && lines[3].contains("us-west-2=ami-a"),
            "{t}"
        );
    }

    #[test]
    fn an_unverified_push_is_marked() {
        let mut b = rec(2, Kind::Deploy, "ami-b", None);
        b.unverified = true;
        let h = History {
            records: vec![rec(1, Kind::Deploy, "ami-a", None), b],
        };
        let live: Images = [("us-west-2".to_string(), "ami-b".to_string())].into();
        let t = render(&h, &live);
        let row = t.lines().nth(1).unwrap();
        assert!(row.contains("#2 deploy (unverified)"), "{t}");
        assert!(row.ends_with("live"), "{t}");
    }

    #[test]
    fn a_change_outside_tc_ami_is_shown_as_live() {
        let h = History {
            records: vec![rec(1, Kind::Deploy, "ami-a", None)],
        };
        let live: Images = [("us-west-2".to_string(), "ami-m".to_string())].into();
        let t = render(&h, &live);
        assert!(t.lines().nth(1).unwrap().contains("outside tc-ami"), "{t}");
        assert!(!t.lines().nth(2).unwrap().ends_with("live"), "{t}");
    }
    #[test]
    fn a_try_is_shown_with_its_outcome_and_never_as_live() {
        let mut t = rec(2, Kind::Try, "ami-t", None);
        t.deployment_id = None;
        t.tried = Some(crate::history::Tried {
            pool: "proj-servo/win2016-try-k3x9q2ab".into(),
            outcome: "failed".into(),
            tasks: vec![],
        });
        let h = History {
            records: vec![rec(1, Kind::Deploy, "ami-a", None), t],
        };
        let live: Images = [("us-west-2".to_string(), "ami-a".to_string())].into();
        let text = render(&h, &live);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("#2 try: failed (0 tasks)"), "{text}");
        assert!(lines[1].contains("us-west-2=ami-t"), "{text}");
        assert!(!lines[1].ends_with("live"), "{text}");
        assert!(
            lines[2].contains("#1 deploy") && lines[2].ends_with("live"),
            "{text}"
        );
    }
}
