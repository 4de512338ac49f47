//! `tc-ami base-ami --list` against the EC2 sandbox seeded with thousands of Amazon Windows
//! images (`extra_windows_images`), which pages DescribeImages as EC2 does (moto does not).

mod support;

use serde_json::{Value, json};
use support::*;

/// Amazon Windows images generated in every region, besides the seed file's.
const EXTRA: usize = 3000;
/// The seed file's pick for `Windows_Server-2016-English-Full-Base-*` (a newer one is pending).
const SEED_PICK: &str = "ami-debb7b63493b4360c";
const SEED_PENDING: &str = "ami-bbc33a8682d2d1a1d";
const PATTERN: &str = "Windows_Server-2016-English-Full-Base-*";

fn world() -> (Ec2, Config) {
    let ec2 = Ec2::start(json!({"extra_windows_images": EXTRA}));
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "");
    (ec2, cfg)
}

fn describe_images_calls(ec2: &Ec2) -> u64 {
    ec2.stats()["requests"]["DescribeImages"]
        .as_u64()
        .unwrap_or(0)
}

fn reset_stats(ec2: &Ec2) {
    ec2.server.post("/_sandbox/stats/reset", json!({}));
}

#[test]
fn lists_thousands_of_images_in_groups_over_several_pages() {
    let (ec2, cfg) = world();
    reset_stats(&ec2);
    let run = TcAmi::new(&ec2, None, &cfg).run(&["--json", "base-ami", "--list", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    let images = doc["images"].as_u64().expect("images") as usize;
    assert!(images > EXTRA, "{images} images");
    // Pages of 1,000: more than one DescribeImages call, exactly as many as pages.
    let calls = describe_images_calls(&ec2);
    assert_eq!(calls as usize, images.div_ceil(1000), "{images} images");
    assert!(calls > 1);
    assert_eq!(
        (doc["region"].clone(), doc["owner"].clone()),
        (json!("us-west-2"), json!("amazon"))
    );

    let groups = doc["groups"].as_array().expect("groups");
    let total: u64 = groups.iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, images, "every image is in one group");
    // Sorted by version, locale, edition, flavour; Full before Core.
    let keys: Vec<(String, String)> = groups
        .iter()
        .filter(|g| !g["family"].is_null())
        .map(|g| {
            (
                g["family"]["version"].to_string(),
                g["family"]["locale"].to_string(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let base = groups
        .iter()
        .find(|g| g["pattern"] == PATTERN)
        .expect("the 2016 English Full Base group");
    assert_eq!(base["family"]["edition"], "Full");
    assert_eq!(
        base["newest"]["id"], SEED_PICK,
        "the pending image is not the newest usable"
    );
    assert_eq!(
        base["count"].as_u64().unwrap(),
        base["available"].as_u64().unwrap() + 1,
        "one pending"
    );
    // Every generated family has a group of its own, with its pattern.
    for family in [
        "Windows_Server-2019-Japanese-Full-SQL_2019_Standard-*",
        "Windows_Server-2022-German-Core-Base-*",
    ] {
        let g = groups.iter().find(|g| g["pattern"] == family);
        assert!(g.is_some_and(|g| g["count"].as_u64() > Some(1)), "{family}");
    }
    // The worker type's pick is the one `base-ami -w w` gives.
    assert_eq!(doc["worker_type"]["picks"]["id"], SEED_PICK);
    let pick = TcAmi::new(&ec2, None, &cfg).run(&["--json", "base-ami", "-w", "w"]);
    assert_eq!(pick.json()["image"]["id"], SEED_PICK);
}

#[test]
fn human_listing_shows_a_row_per_group() {
    let (ec2, cfg) = world();
    let args = ["base-ami", "--list", "--region", "us-east-1"];
    let doc = TcAmi::new(&ec2, None, &cfg)
        .run(&[&["--json"], &args[..]].concat())
        .json();
    let groups = doc["groups"].as_array().expect("groups").len();
    let run = TcAmi::new(&ec2, None, &cfg).run(&args);
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{} Windows images owned by amazon in us-east-1, in {groups} groups; the newest available image of each:",
            doc["images"]
        )
    );
    assert!(lines[1].starts_with("VERSION  LOCALE"), "{}", lines[1]);
    assert_eq!(lines.len(), 2 + groups);
    let row = lines
        .iter()
        .find(|l| l.ends_with("Windows_Server-2016-English-Full-Base-2024.04.10"))
        .expect("the 2016 English Full Base row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], &["2016", "English", "Full", "Base"]);
    assert!(row.contains("(1 not available)"), "{row}");
    assert!(row.contains(SEED_PICK), "{row}");
    assert!(
        run.stderr.contains("one group's images: tc-ami base-ami --list --region us-east-1 --owner amazon --pattern '"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_pattern_lists_its_images_newest_first_and_marks_the_pick() {
    let (ec2, cfg) = world();
    // A newer image that is still pending, and one with the pick's date and a lower name.
    ec2.server.post(
        "/_sandbox/seed-image",
        json!({"region": "us-west-2", "name": "Windows_Server-2016-English-Full-Base-2024.04.09",
               "creation_date": "2024-04-10T08:13:37.000Z"}),
    );
    let run = TcAmi::new(&ec2, None, &cfg).run(&[
        "--json",
        "base-ami",
        "--list",
        "-w",
        "w",
        "--pattern",
        PATTERN,
    ]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["pattern"], PATTERN);
    assert_eq!(doc["picked"]["id"], SEED_PICK);
    let list = doc["candidates"].as_array().expect("candidates");
    assert_eq!(doc["images"].as_u64(), Some(list.len() as u64));
    assert!(list.len() > 20, "a month of releases each: {}", list.len());
    let dates: Vec<&str> = list
        .iter()
        .map(|c| c["image"]["creation_date"].as_str().unwrap())
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {dates:?}"
    );
    let verdict = |id: &str| -> Value {
        list.iter()
            .find(|c| c["image"]["id"] == id)
            .map(|c| c["verdict"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(verdict(SEED_PENDING), "not_available");
    assert_eq!(list[0]["image"]["id"], SEED_PENDING);
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(verdict(SEED_PICK), "picked");
    let same_date = list
        .iter()
        .find(|c| c["image"]["name"] == "Windows_Server-2016-English-Full-Base-2024.04.09")
        .expect("the added image");
    assert_eq!(same_date["verdict"], "same_date_lower_name");
    assert_eq!(list.iter().filter(|c| c["verdict"] == "picked").count(), 1);
    assert!(list[3..].iter().all(|c| c["verdict"] == "older"));
    assert!(list.iter().all(|c| {
        c["image"]["name"]
            .as_str()
            .unwrap()
            .starts_with("Windows_Server-2016-English-Full-Base-")
    }));

    // The same as text: the table, then which image a build would start from.
    let run =
        TcAmi::new(&ec2, None, &cfg).run(&["base-ami", "--list", "-w", "w", "--pattern", PATTERN]);
    run.assert_code(0);
    let picked_row = run
        .stdout
        .lines()
        .find(|l| l.starts_with(SEED_PICK))
        .expect("the pick's row");
    assert!(
        picked_row.ends_with("available  picked: the newest available match"),
        "{picked_row}"
    );
    assert!(
        run.stdout
            .lines()
            .nth(2)
            .unwrap()
            .ends_with("pending    pending: not available")
    );
    assert!(
        run.stderr.contains(&format!(
            "a build with this pattern would start from {SEED_PICK} "
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn another_owner_and_region() {
    let (ec2, cfg) = world();
    // The seed's look-alike image, owned by another account.
    let run = TcAmi::new(&ec2, None, &cfg).run(&[
        "--json",
        "base-ami",
        "--list",
        "--region",
        "eu-west-1",
        "--owner",
        "111122223333",
    ]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["images"], 1);
    assert_eq!(doc["groups"][0]["newest"]["id"], "ami-35fb92ac9c426ec1f");
    assert_eq!(doc["region"], "eu-west-1");
    assert!(doc["worker_type"].is_null());
}

#[test]
fn bad_list_arguments_are_one_line_each() {
    let (ec2, cfg) = world();
    let cases: [(&[&str], &str); 7] = [
        (
            &["base-ami", "--list"],
            "base-ami --list needs a region: -w W (its build region and owner) or --region R",
        ),
        (
            &["base-ami"],
            "the following required arguments were not provided: --worker-type <W>",
        ),
        (
            &["base-ami", "--list", "-w", "w", "--region", "us-east-1"],
            "the argument '--worker-type <W>' cannot be used with '--region <R>'",
        ),
        (
            &["base-ami", "-w", "w", "--pattern", "x"],
            "the following required arguments were not provided: --list",
        ),
        (
            &["base-ami", "--list", "--region", "Oregon"],
            "--region Oregon: not a region name",
        ),
        (
            &[
                "base-ami",
                "--list",
                "--region",
                "us-west-2",
                "--owner",
                "bob",
            ],
            "--owner bob: expected amazon, self, aws-marketplace or a 12-digit AWS account id",
        ),
        (
            &[
                "base-ami",
                "--list",
                "-w",
                "w",
                "--pattern",
                "Windows_Server-1999-*",
            ],
            "no Windows image named `Windows_Server-1999-*` owned by amazon in us-west-2; drop --pattern to see the groups of names",
        ),
    ];
    for (args, want) in cases {
        let run = TcAmi::new(&ec2, None, &cfg).run(args);
        run.assert_code(1);
        let err = run.error_line();
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            run.stderr
                .lines()
                .filter(|l| l.starts_with("tc-ami:"))
                .count(),
            1
        );
    }
}

/// `-v` logs every page as its own DescribeImages call.
#[test]
fn each_page_is_a_logged_call() {
    let (ec2, cfg) = world();
    let run = TcAmi::new(&ec2, None, &cfg).run(&["-v", "base-ami", "--list", "-w", "w"]);
    run.assert_code(0);
    let pages: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| {
            l.contains("EC2 DescribeImages in us-west-2 (owner amazon platform=windows, page ")
        })
        .collect();
    assert!(pages.len() > 1, "{}", run.stderr);
    assert!(pages[0].contains("page 1)"), "{}", pages[0]);
}
