//! tc-ami's waiting on a virtual clock: how many polls a build makes and how late it notices
//! each transition, on the sandbox's short timeline and on a realistic one (a guest of 40
//! minutes, an image of 15, a copy of 20), next to other ways of waiting.
//!
//! A real-time run of the realistic timeline would take 75 minutes per build, so the waits run
//! under tokio's paused clock (time jumps to the next timer when every task is idle) against a
//! scripted EC2: each poll answers from the timeline by virtual time, at once (no round trip,
//! so the figures are the schedule's alone). tc-ami's waits are its own code: the blocked-on
//! waits call `tc_ami::wait::poll_until` with `POLL_INTERVAL`, the build instance's release
//! while the copy is pending paces itself with `tc_ami::wait::Pacer` from `RELEASE_PACE`, as
//! `ops::instances::terminate_and_wait` does, and the password wait makes every
//! `PASSWORD_POLLS_PER_STATE_CHECK`-th poll a state check, which cannot see the password.
//! Every strategy follows tc-ami's pipeline (running, password, stopped, image, then the copy
//! and the release at once); only the schedule differs:
//!
//! - `tc-ami`: the schedule (`tc_ami::wait::poll_interval`);
//! - `fixed 1.2 s`: tc-ami before it, a poll every 1.2 s (the release every 3 s), the first
//!   one interval in;
//! - `fixed 15 s`: the AWS CLI's and boto3's waiters (botocore waiters-2.json: `delay` 15), a
//!   call at once, then one 15 s after each answer;
//! - `SDK waiter`: the AWS SDK for Rust's waiters (aws-sdk-ec2: `min_delay` 15 s, `max_delay`
//!   120 s; aws-smithy-runtime `Backoff::delay`): a call at once, then after the n-th
//!   unsuccessful call a whole number of seconds drawn from [15, min(15·2ⁿ⁻¹, 120)] (see
//!   benches/strategies.py), seeded.
//!
//! `cargo bench --bench waiting [-- --reps N] [--seed N] [--json]`; `benches/run` runs it (in
//! the dev profile: the figures are virtual time, so the profile changes nothing measured) and
//! prints its report after the sandbox's.

use std::cell::Cell;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tc_ami::interrupt::Cancel;
use tc_ami::ops::build::{PASSWORD_POLLS_PER_STATE_CHECK, RELEASE_PACE};
use tc_ami::wait::{POLL_INTERVAL, Pacer, poll_until};
use tokio::time::Instant;

/// Nominal seconds of each scheduled transition, as in the sandbox (sandbox/EC2.md,
/// "Configuration"; benches/benchmark.py's `--timeline`): `boot` pending → running after
/// RunInstances, `password` and `shutdown` after running, `stop` stopping → stopped, `image` and
/// `copy` pending → available after CreateImage / CopyImage, `terminate` shutting-down →
/// terminated after TerminateInstances. Each build adds a random [0, jitter) s to each.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    name: &'static str,
    title: &'static str,
    boot: f64,
    password: f64,
    shutdown: f64,
    stop: f64,
    image: f64,
    copy: f64,
    terminate: f64,
    jitter: f64,
}

const TIMELINES: [Timeline; 2] = [
    // benches/benchmark.py's DEFAULT_TIMELINE and --jitter.
    Timeline {
        name: "short",
        title: "short (the sandbox's default)",
        boot: 2.0,
        password: 2.0,
        shutdown: 20.0,
        stop: 1.0,
        image: 3.0,
        copy: 4.0,
        terminate: 1.0,
        jitter: 1.0,
    },
    // Issue 11: the guest 40 min, the image 15, the copy 20. The other four are this
    // benchmark's assumptions, each a minute or a few: they are not on the critical path except
    // `stop`, and only change the figures a little.
    Timeline {
        name: "realistic",
        title: "realistic (guest 40 min, image 15 min, copy 20 min)",
        boot: 60.0,
        password: 240.0,
        shutdown: 2400.0,
        stop: 60.0,
        image: 900.0,
        copy: 1200.0,
        terminate: 60.0,
        jitter: 60.0,
    },
];

const STAGES: [&str; 6] = [
    "running",
    "password",
    "stopped",
    "image",
    "copy",
    "terminated",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Strategy {
    TcAmi,
    Fixed1200ms,
    Fixed15s,
    SdkWaiter,
}

const STRATEGIES: [Strategy; 4] = [
    Strategy::TcAmi,
    Strategy::Fixed1200ms,
    Strategy::Fixed15s,
    Strategy::SdkWaiter,
];

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::TcAmi => "tc-ami",
            Strategy::Fixed1200ms => "fixed 1.2 s",
            Strategy::Fixed15s => "fixed 15 s",
            Strategy::SdkWaiter => "SDK waiter",
        }
    }
}

/// One build's timeline: the nominal seconds plus each delay's random part.
#[derive(Debug, Clone, Copy)]
struct Sampled {
    boot: f64,
    password: f64,
    shutdown: f64,
    stop: f64,
    image: f64,
    copy: f64,
    terminate: f64,
}

fn sample(t: &Timeline, rng: &mut StdRng) -> Sampled {
    let mut d = |v: f64| v + rng.gen_range(0.0..1.0) * t.jitter;
    Sampled {
        boot: d(t.boot),
        password: d(t.password),
        shutdown: d(t.shutdown),
        stop: d(t.stop),
        image: d(t.image),
        copy: d(t.copy),
        terminate: d(t.terminate),
    }
}

/// What one build did, in seconds from RunInstances.
#[derive(Debug, Default)]
struct Outcome {
    /// Polls in the build region and in the copy region.
    calls_build: u32,
    calls_copy: u32,
    /// Per stage: when it happened, when the build noticed, when its wait began.
    event: [f64; 6],
    notice: [f64; 6],
    wait_start: [f64; 6],
    wall: f64,
    /// RunInstances → stopped, CreateImage → available, CopyImage → available, and the part of
    /// the termination that outlasted the copy.
    aws_critical: f64,
}

/// Waits until `done(now)` on `strategy`'s schedule; returns the number of polls.
async fn wait(
    strategy: Strategy,
    background: bool,
    rng: &Cell<u64>,
    mut done: impl FnMut(u32, Duration) -> bool,
    origin: Instant,
) -> u32 {
    let calls = Cell::new(0u32);
    let poll = |done: &mut dyn FnMut(u32, Duration) -> bool| {
        calls.set(calls.get() + 1);
        done(calls.get(), origin.elapsed())
    };
    match strategy {
        Strategy::TcAmi if !background => {
            poll_until(
                &Cancel::new(),
                "bench",
                Instant::now(),
                Duration::from_secs(24 * 3600),
                POLL_INTERVAL,
                || {
                    let seen = poll(&mut done);
                    async move { Ok(seen.then_some(())) }
                },
            )
            .await
            .expect("no deadline, no interrupt, no error");
        }
        Strategy::TcAmi => {
            // ops::instances::terminate_and_wait: a pause on the schedule, then a look.
            let pacer = Pacer::new(RELEASE_PACE);
            loop {
                pacer.pause().await;
                if poll(&mut done) {
                    break;
                }
            }
        }
        Strategy::Fixed1200ms => {
            let every = if background {
                RELEASE_PACE
            } else {
                POLL_INTERVAL
            };
            loop {
                tokio::time::sleep(every).await;
                if poll(&mut done) {
                    break;
                }
            }
        }
        Strategy::Fixed15s => {
            while !poll(&mut done) {
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        }
        Strategy::SdkWaiter => {
            let mut attempt = 0u32;
            let mut state = StdRng::seed_from_u64(rng.get());
            while !poll(&mut done) {
                attempt += 1;
                tokio::time::sleep(sdk_waiter_delay(attempt, &mut state)).await;
            }
            rng.set(state.r#gen());
        }
    }
    calls.get()
}

/// aws-smithy-runtime's `Backoff::delay(attempt)` with aws-sdk-ec2's 15 s / 120 s (the cut near
/// `max_wait`, 60 or 90 minutes here, never comes into play on these timelines).
fn sdk_waiter_delay(attempt: u32, rng: &mut StdRng) -> Duration {
    const MIN: u64 = 15;
    const MAX: u64 = 120;
    // floor(log2(max / min) + 1) = 4
    let ceiling = ((MAX as f64 / MIN as f64).log2() + 1.0) as u32;
    let hi = if attempt > ceiling {
        MAX
    } else {
        MIN << (attempt - 1)
    };
    Duration::from_secs(rng.gen_range(MIN..=hi))
}

async fn build(strategy: Strategy, t: Sampled, seed: u64) -> Outcome {
    let rng = Cell::new(seed);
    let origin = Instant::now();
    let now = || origin.elapsed().as_secs_f64();
    let at = |s: f64| Duration::from_secs_f64(s);
    let mut o = Outcome::default();
    let running = t.boot;
    let password = running + t.password;
    let stopped = running + t.shutdown + t.stop;

    // 0 running: tc-ami takes running, stopping or stopped (all at or after `running`).
    o.wait_start[0] = now();
    o.calls_build += wait(strategy, false, &rng, |_, e| e >= at(running), origin).await;
    (o.event[0], o.notice[0]) = (running, now());

    // 1 password: tc-ami's every 10th poll is a DescribeInstances, which cannot see it (the
    // instance is still running).
    o.wait_start[1] = now();
    let state_checks = strategy == Strategy::TcAmi;
    o.calls_build += wait(
        strategy,
        false,
        &rng,
        |n, e| {
            !(state_checks && n.is_multiple_of(PASSWORD_POLLS_PER_STATE_CHECK)) && e >= at(password)
        },
        origin,
    )
    .await;
    (o.event[1], o.notice[1]) = (password, now());

    // 2 stopped.
    o.wait_start[2] = now();
    o.calls_build += wait(strategy, false, &rng, |_, e| e >= at(stopped), origin).await;
    (o.event[2], o.notice[2]) = (stopped, now());

    // 3 image: CreateImage the moment the stop is seen.
    let image = now() + t.image;
    o.wait_start[3] = now();
    o.calls_build += wait(strategy, false, &rng, |_, e| e >= at(image), origin).await;
    (o.event[3], o.notice[3]) = (image, now());

    // 4 copy and 5 the release, at once: CopyImage and TerminateInstances when the image is.
    let copy = now() + t.copy;
    let terminated = now() + t.terminate;
    o.wait_start[4] = now();
    o.wait_start[5] = now();
    let rng_release = Cell::new(seed.wrapping_add(1));
    let copying = async {
        let n = wait(strategy, false, &rng, |_, e| e >= at(copy), origin).await;
        (n, now())
    };
    let releasing = async {
        let n = wait(
            strategy,
            true,
            &rng_release,
            |_, e| e >= at(terminated),
            origin,
        )
        .await;
        (n, now())
    };
    let ((n_copy, seen_copy), (n_release, seen_release)) = tokio::join!(copying, releasing);
    o.calls_copy += n_copy;
    o.calls_build += n_release;
    (o.event[4], o.notice[4]) = (copy, seen_copy);
    (o.event[5], o.notice[5]) = (terminated, seen_release);

    o.wall = seen_copy.max(seen_release);
    o.aws_critical = stopped + t.image + t.copy + (terminated - copy).max(0.0);
    o
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

fn stats_json(s: Stats) -> Value {
    json!({"median": s.median, "min": s.min, "max": s.max})
}

struct Summary {
    calls: Stats,
    calls_build: Stats,
    calls_copy: Stats,
    wall: Stats,
    aws_critical: Stats,
    overhead: Stats,
    lag: Vec<Stats>,
    lag_all: Stats,
    /// Per stage, the largest lag ÷ the length of its wait (from the start of the wait to the
    /// transition), over the builds whose wait lasted a minute or more.
    worst_lag_fraction: Vec<Option<f64>>,
    /// Polls per minute of the build's wall time (it waits nearly all of it).
    calls_per_minute: Stats,
}

fn summarise(outcomes: &[Outcome]) -> Summary {
    let col = |f: &dyn Fn(&Outcome) -> f64| stats(outcomes.iter().map(f).collect());
    let lag = (0..STAGES.len())
        .map(|s| col(&|o| o.notice[s] - o.event[s]))
        .collect();
    let all: Vec<f64> = outcomes
        .iter()
        .flat_map(|o| (0..STAGES.len()).map(move |s| o.notice[s] - o.event[s]))
        .collect();
    let worst = (0..STAGES.len())
        .map(|s| {
            outcomes
                .iter()
                .filter_map(|o| {
                    let length = o.event[s] - o.wait_start[s];
                    (length >= 60.0).then(|| (o.notice[s] - o.event[s]) / length)
                })
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        })
        .collect();
    Summary {
        calls: col(&|o| f64::from(o.calls_build + o.calls_copy)),
        calls_build: col(&|o| f64::from(o.calls_build)),
        calls_copy: col(&|o| f64::from(o.calls_copy)),
        wall: col(&|o| o.wall),
        aws_critical: col(&|o| o.aws_critical),
        overhead: col(&|o| o.wall - o.aws_critical),
        lag,
        lag_all: stats(all),
        worst_lag_fraction: worst,
        calls_per_minute: col(&|o| f64::from(o.calls_build + o.calls_copy) * 60.0 / o.wall),
    }
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "calls": stats_json(s.calls),
        "calls_build_region": stats_json(s.calls_build),
        "calls_copy_region": stats_json(s.calls_copy),
        "wall": stats_json(s.wall),
        "aws_critical": stats_json(s.aws_critical),
        "overhead": stats_json(s.overhead),
        "lag": STAGES.iter().zip(&s.lag).map(|(k, v)| (k.to_string(), stats_json(*v))).collect::<serde_json::Map<_, _>>(),
        "lag_all_stages": stats_json(s.lag_all),
        "worst_lag_fraction_of_wait": STAGES.iter().zip(&s.worst_lag_fraction).map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "calls_per_minute": stats_json(s.calls_per_minute),
    })
}

struct Args {
    reps: usize,
    seed: u64,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        reps: 1000,
        seed: 1,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{what} needs a whole number"))
        };
        match a.as_str() {
            "--reps" => args.reps = number("--reps")?.max(1) as usize,
            "--seed" => args.seed = number("--seed")?,
            "--json" => args.json = true,
            // cargo bench passes --bench to a harness = false target.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument {other}; use --reps N, --seed N, --json"
                ));
            }
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("waiting bench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread tokio runtime");
    let mut timelines = serde_json::Map::new();
    let mut summaries = Vec::new();
    for tl in &TIMELINES {
        let mut rng = StdRng::seed_from_u64(args.seed);
        let sampled: Vec<Sampled> = (0..args.reps).map(|_| sample(tl, &mut rng)).collect();
        let mut per_strategy = serde_json::Map::new();
        let mut sums = Vec::new();
        for &st in &STRATEGIES {
            let outcomes: Vec<Outcome> = runtime.block_on(async {
                let mut v = Vec::new();
                for (i, t) in sampled.iter().enumerate() {
                    v.push(build(st, *t, args.seed * 1_000_003 + i as u64).await);
                }
                v
            });
            let s = summarise(&outcomes);
            per_strategy.insert(st.name().to_string(), summary_json(&s));
            sums.push(s);
        }
        timelines.insert(
            tl.name.to_string(),
            json!({
                "title": tl.title,
                "nominal_seconds": {"boot": tl.boot, "password": tl.password, "shutdown": tl.shutdown,
                    "stop": tl.stop, "image": tl.image, "copy": tl.copy, "terminate": tl.terminate},
                "jitter": tl.jitter,
                "strategies": Value::Object(per_strategy),
            }),
        );
        summaries.push((tl, sums));
    }
    let doc = json!({
        "command": format!("cargo bench --bench waiting -- --reps {} --seed {}", args.reps, args.seed),
        "reps": args.reps,
        "seed": args.seed,
        "stages": STAGES,
        "strategies": STRATEGIES.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "timelines": Value::Object(timelines),
    });
    if args.json {
        println!("{doc}");
    } else {
        println!("{}", report(&doc));
    }
}

/// The human report of the JSON document (benches/benchmark.py prints the same from it).
fn report(doc: &Value) -> String {
    let mut out = vec![format!(
        "Waiting on a virtual clock: {} builds per timeline and strategy, seed {}; polls answer at once (no round trip)",
        doc["reps"], doc["seed"]
    )];
    let names: Vec<&str> = STRATEGIES.iter().map(|s| s.name()).collect();
    let Some(timelines) = doc["timelines"].as_object() else {
        return out.join("\n");
    };
    for tl in timelines.values() {
        out.push(String::new());
        out.push(format!("{} timeline", tl["title"].as_str().unwrap_or("?")));
        out.push(format!(
            "  {:<40}{}",
            "medians",
            names.iter().map(|n| format!("{n:>14}")).collect::<String>()
        ));
        let row = |label: &str, get: &dyn Fn(&Value) -> Option<f64>, digits: usize| {
            let cells: String = names
                .iter()
                .map(|n| match get(&tl["strategies"][*n]) {
                    Some(v) => format!("{v:>14.digits$}"),
                    None => format!("{:>14}", "–"),
                })
                .collect();
            format!("  {label:<40}{cells}")
        };
        let med = |key: &'static str| move |s: &Value| s[key]["median"].as_f64();
        out.push(row("polls per build (both regions)", &med("calls"), 0));
        out.push(row("  in the build region", &med("calls_build_region"), 0));
        out.push(row("  in the copy region", &med("calls_copy_region"), 0));
        out.push(row(
            "polls per minute of the build",
            &med("calls_per_minute"),
            1,
        ));
        out.push(row(
            "overhead: wall - AWS critical path, s",
            &med("overhead"),
            2,
        ));
        out.push(row(
            "detection lag, all stages, s",
            &med("lag_all_stages"),
            2,
        ));
        for st in STAGES {
            out.push(row(
                &format!("  {st}"),
                &|s: &Value| s["lag"][st]["median"].as_f64(),
                2,
            ));
        }
        let any_long = names.iter().any(|n| {
            STAGES
                .iter()
                .any(|st| tl["strategies"][*n]["worst_lag_fraction_of_wait"][*st].is_number())
        });
        if !any_long {
            continue;
        }
        out.push(String::from(
            "  worst lag ÷ the wait's length (waits of 60 s or more), %",
        ));
        for st in STAGES {
            out.push(row(
                &format!("  {st}"),
                &|s: &Value| {
                    s["worst_lag_fraction_of_wait"][st]
                        .as_f64()
                        .map(|f| f * 100.0)
                },
                2,
            ));
        }
    }
    out.join("\n")
}
