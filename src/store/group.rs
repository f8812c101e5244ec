//! Compare-and-sets of many jobs in one round trip: a group commit (docs/consistency.md,
//! "Group commit").
//!
//! The statements go as one `update` command, unordered. Each is the compare-and-set of one job
//! (`jobs.rs` `cas_statement`, filter `{_id, run_id, version}`), so one that loses or fails
//! stops none of the others and each stays atomic on its own. The reply counts the statements
//! that matched (`n`) and names those that failed (`writeErrors`, by `index`), but does not say
//! which matched. When every statement without an error matched, or none did, the count
//! settles it. Otherwise the statements are judged one by one, without guessing: each one also
//! pushed a write token of its own into its job (`update.rs` `WRITE_TOKENS`: the last
//! [`TOKENS_KEPT`] writes of the run, each with the version it wrote), and the jobs concerned
//! are read back in one query ([`judge`]). What that read cannot tell (the run left `jobs`, or
//! more than [`TOKENS_KEPT`] writes came since) is settled by the count when the count allows
//! it, and is otherwise the statement's error, `Contention`: written or not, as when a
//! compare-and-set's reply is lost.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::bson::raw::{RawArrayBuf, RawDocumentBuf};
use mongodb::bson::{Bson, Document, doc};

use super::chunks::{self, ChunkWrite};
use super::jobs::{cas_statement, concern_error, matched, statement_error};
use super::update::{TOKENS_KEPT, WRITE_TOKENS, job_update_with_token};
use super::{Store, StoreError};
use crate::domain::Job;

/// Most bytes of statements sent in one command: MongoDB takes a command of up to 16 MiB (and
/// 16 KiB), and a raw command is one document. More statements go in further commands; a
/// statement larger than this goes alone.
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;

/// The outcome of one statement: won, lost, or its own error.
pub type Outcome = Result<bool, StoreError>;

/// One compare-and-set, ready to send.
struct Prepared {
    /// Its place among the writes asked for.
    index: usize,
    token: String,
    statement: RawDocumentBuf,
}

/// The statements of one command, and the writes they are.
#[derive(Default)]
struct Command {
    statements: RawArrayBuf,
    bytes: usize,
    /// Per statement, in order: its place among the writes asked for, and its token.
    members: Vec<(usize, String)>,
}

/// What reading a statement's job back says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    Won,
    Lost,
    /// The job's run is gone, or its tokens no longer reach back to this write.
    Unknown,
}

/// The run, version and write tokens of a stored job, as read back.
#[derive(Debug, Default)]
struct Stored {
    run_id: String,
    version: i64,
    /// `(version, token)`, oldest first.
    tokens: Vec<(i64, String)>,
}

impl Store {
    /// Writes each `(before, after)` by compare-and-set, all in one `update` command (more
    /// only past [`MAX_COMMAND_BYTES`]), and returns one outcome per write, in order. The
    /// outer error says every command failed as a whole, so no write's outcome is known.
    pub async fn compare_and_set_many(
        &self,
        writes: &[(&Job, &Job)],
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; writes.len()];
        // Wide stages' changed task chunks, inserted before any statement names them.
        let mut chunks = Vec::with_capacity(writes.len());
        for (before, after) in writes {
            chunks.push(chunks::plan(Some(before), after));
        }
        let inserting = ChunkWrite::merged(chunks.iter().filter_map(|c| c.as_ref().ok()));
        self.insert_chunks(&inserting).await?;
        let prepared = prepare(writes, &chunks, &mut outcomes);
        let (mut commands, mut failed) = (0, Vec::new());
        for mut command in commands_of(prepared) {
            commands += 1;
            let members = std::mem::take(&mut command.members);
            match self.send(writes, command.statements, &members).await {
                Ok(judged) => {
                    for ((index, _), outcome) in members.iter().zip(judged) {
                        outcomes[*index] = Some(outcome);
                    }
                }
                Err(error) => {
                    for (index, _) in &members {
                        outcomes[*index] = Some(Err(error.clone()));
                    }
                    failed.push(error);
                }
            }
        }
        if commands > 0 && failed.len() == commands {
            return Err(failed.swap_remove(0));
        }
        let missing = || Err(StoreError::Malformed("a write without an outcome".into()));
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(missing))
            .collect();
        for ((outcome, (_, after)), chunks) in outcomes.iter().zip(writes).zip(&chunks) {
            if let (Ok(won), Ok(chunks)) = (outcome, chunks) {
                self.settle_chunks(after, chunks, *won).await;
            }
        }
        Ok(outcomes)
    }

    /// Sends `statements` (of the writes `members`) as one unordered `update` command; one
    /// outcome per statement.
    async fn send(
        &self,
        writes: &[(&Job, &Job)],
        statements: RawArrayBuf,
        members: &[(usize, String)],
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut command = self.raw_update_command(statements);
        command.append("ordered", false);
        let reply = self.db.run_raw_command(command).await?;
        let Read {
            mut outcomes,
            open,
            won,
        } = read_reply(&reply, members.len())?;
        let judged = if won == open.len() {
            vec![Ok(true); open.len()]
        } else if won == 0 {
            vec![Ok(false); open.len()]
        } else {
            self.read_back(writes, members, &open, won).await
        };
        for (i, outcome) in open.into_iter().zip(judged) {
            outcomes[i] = Some(outcome);
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Judges the statements `open` of a command's `members`, of which `won` matched, by
    /// reading their jobs' runs, versions and write tokens back in one query.
    async fn read_back(
        &self,
        writes: &[(&Job, &Job)],
        members: &[(usize, String)],
        open: &[usize],
        won: usize,
    ) -> Vec<Outcome> {
        let ids: Vec<&str> = open
            .iter()
            .map(|&i| writes[members[i].0].0.id.as_str())
            .collect();
        let stored = match self.stored_tokens(&ids).await {
            Ok(stored) => stored,
            Err(error) => return vec![Err(error); open.len()],
        };
        let judged: Vec<Judged> = open
            .iter()
            .map(|&i| {
                let (index, token) = &members[i];
                let before = writes[*index].0;
                judge(stored.get(before.id.as_str()), before, token)
            })
            .collect();
        settle(&judged, won)
    }

    /// The run, version and write tokens of the jobs `ids` that are stored, by id.
    async fn stored_tokens(&self, ids: &[&str]) -> Result<HashMap<String, Stored>, StoreError> {
        let projection = doc! {"run_id": 1, "version": 1, WRITE_TOKENS: 1};
        let found: Vec<Document> = self
            .jobs
            .find(doc! {"_id": {"$in": ids}})
            .projection(projection)
            .await?
            .try_collect()
            .await?;
        Ok(found.iter().filter_map(stored).collect())
    }
}

/// What the reply of a command of `count` statements says by itself.
#[derive(Debug)]
struct Read {
    /// The outcomes known from the reply: the statements' own errors, and a write concern
    /// error for the others.
    outcomes: Vec<Option<Outcome>>,
    /// The statements without an outcome yet.
    open: Vec<usize>,
    /// How many of `open` matched.
    won: usize,
}

/// Reads the reply of an unordered `update` command of `count` statements: the errors of the
/// statements that failed (by `index`), a write concern error (every other statement's: not
/// The statement of each write, with a fresh token and its wide stages' chunk pointers; a write
/// whose update or chunks cannot be built gets that error as its outcome instead.
fn prepare(
    writes: &[(&Job, &Job)],
    chunks: &[Result<ChunkWrite, StoreError>],
    outcomes: &mut [Option<Outcome>],
) -> Vec<Prepared> {
    let mut prepared = Vec::with_capacity(writes.len());
    for (index, (before, after)) in writes.iter().enumerate() {
        debug_assert_eq!(after.version, before.version + 1);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let pointers = match &chunks[index] {
            Ok(chunks) => &chunks.pointers[..],
            Err(error) => {
                outcomes[index] = Some(Err(error.clone()));
                continue;
            }
        };
        match job_update_with_token(before, after, pointers, &token) {
            Ok(update) => {
                let statement = cas_statement(before, update);
                prepared.push(Prepared {
                    index,
                    token,
                    statement,
                });
            }
            Err(error) => outcomes[index] = Some(Err(error)),
        }
    }
    prepared
}

/// durable as asked), and how many of the rest matched (`n`).
fn read_reply(reply: &Document, count: usize) -> Result<Read, StoreError> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
    if let Ok(errors) = reply.get_array("writeErrors") {
        for error in errors {
            let index = error.as_document().and_then(|d| index_of(d.get("index")));
            match index.and_then(|i| outcomes.get_mut(i)) {
                Some(outcome) => *outcome = Some(Err(statement_error(error))),
                None => return Err(malformed_reply(reply)),
            }
        }
    }
    if let Ok(error) = reply.get_document("writeConcernError") {
        let error = concern_error(error);
        for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
            *outcome = Some(Err(error.clone()));
        }
    }
    let open: Vec<usize> = (0..count).filter(|&i| outcomes[i].is_none()).collect();
    let won = usize::try_from(matched(reply)?).map_err(|_| malformed_reply(reply))?;
    // A write concern error leaves no statement open, whatever matched.
    let won = if open.is_empty() { 0 } else { won };
    if won > open.len() {
        return Err(malformed_reply(reply));
    }
    Ok(Read {
        outcomes,
        open,
        won,
    })
}

/// Splits `prepared` into commands of at most [`MAX_COMMAND_BYTES`] of statements each (a
/// larger statement alone), in order.
fn commands_of(prepared: Vec<Prepared>) -> Vec<Command> {
    let mut commands: Vec<Command> = Vec::new();
    for p in prepared {
        let size = p.statement.as_bytes().len();
        let fits = commands
            .last()
            .is_some_and(|last| last.bytes + size <= MAX_COMMAND_BYTES);
        if !fits {
            commands.push(Command::default());
        }
        if let Some(last) = commands.last_mut() {
            last.bytes += size;
            last.statements.push(p.statement);
            last.members.push((p.index, p.token));
        }
    }
    commands
}

/// A statement's write of `before.version + 1`, judged from its job `stored` (of any run, or
/// none) and its `token`.
fn judge(stored: Option<&Stored>, before: &Job, token: &str) -> Judged {
    let Some(stored) = stored.filter(|s| s.run_id == before.run_id) else {
        // No job of this run: it left `jobs` or never matched; the tokens went with it.
        return Judged::Unknown;
    };
    let version = before.version + 1;
    if let Some((_, holder)) = stored.tokens.iter().find(|(v, _)| *v == version) {
        // Only one write can take a run to a version: its token says whose it was.
        return if holder == token {
            Judged::Won
        } else {
            Judged::Lost
        };
    }
    if stored.version < version {
        return Judged::Lost;
    }
    // The version was written, with no token of it on the list: either its writer kept none
    // (so it was not this statement), or later writes pushed it off a full list.
    let full = stored.tokens.len() >= TOKENS_KEPT as usize;
    let overrun = full && stored.tokens.first().is_some_and(|(v, _)| *v > version);
    if overrun {
        Judged::Unknown
    } else {
        Judged::Lost
    }
}

/// The outcomes of statements judged `judged`, of which `won` matched: statements the read
/// could not judge are settled by the count when it leaves one answer (all lost when the
/// winners are all known, all won when they make up the rest), and are otherwise unknown.
fn settle(judged: &[Judged], won: usize) -> Vec<Outcome> {
    let known_wins = judged.iter().filter(|j| **j == Judged::Won).count();
    let unknown = judged.iter().filter(|j| **j == Judged::Unknown).count();
    let rest = if known_wins == won {
        Ok(false)
    } else if known_wins + unknown == won {
        Ok(true)
    } else {
        Err(StoreError::Contention(
            "the outcome of a compare-and-set of a group commit is unknown: written or not".into(),
        ))
    };
    judged
        .iter()
        .map(|j| match j {
            Judged::Won => Ok(true),
            Judged::Lost => Ok(false),
            Judged::Unknown => rest.clone(),
        })
        .collect()
}

/// A stored job's id with its run, version and write tokens; `None` without a string id.
fn stored(document: &Document) -> Option<(String, Stored)> {
    let id = document.get_str("_id").ok()?.to_owned();
    let tokens = match document.get_array(WRITE_TOKENS) {
        Ok(entries) => entries
            .iter()
            .filter_map(|entry| {
                let entry = entry.as_document()?;
                Some((
                    integer(entry.get("v"))?,
                    entry.get_str("t").ok()?.to_owned(),
                ))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let stored = Stored {
        run_id: document.get_str("run_id").unwrap_or_default().to_owned(),
        version: integer(document.get("version")).unwrap_or(i64::MIN),
        tokens,
    };
    Some((id, stored))
}

fn integer(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

fn index_of(value: Option<&Bson>) -> Option<usize> {
    integer(value).and_then(|i| usize::try_from(i).ok())
}

fn malformed_reply(reply: &Document) -> StoreError {
    StoreError::Malformed(format!("an update reply that does not add up: {reply}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::sample_job;

    /// A stored job of `job`'s run at `version`, with tokens of versions `tokens` (`t<v>`).
    fn stored_at(job: &Job, version: i64, tokens: std::ops::RangeInclusive<i64>) -> Stored {
        Stored {
            run_id: job.run_id.clone(),
            version,
            tokens: tokens.map(|v| (v, format!("t{v}"))).collect(),
        }
    }

    #[test]
    fn a_reply_gives_each_failed_statement_its_own_error_and_counts_the_rest() {
        let reply = doc! {"n": 2, "ok": 1, "writeErrors": [
            {"index": 1, "code": 11000, "errmsg": "duplicate key"},
            {"index": 3, "code": 91, "errmsg": "shutting down"},
        ]};
        let read = read_reply(&reply, 5).expect("a reply that adds up");
        assert_eq!((read.open.clone(), read.won), (vec![0, 2, 4], 2));
        assert!(matches!(
            read.outcomes[1],
            Some(Err(StoreError::Refused(_)))
        ));
        let busy = &read.outcomes[3];
        assert!(
            matches!(busy, Some(Err(StoreError::Contention(_)))),
            "{busy:?}"
        );
        let concern = doc! {"n": 3, "ok": 1, "writeConcernError": {"code": 64, "errmsg": "w"}};
        let read = read_reply(&concern, 3).expect("a reply that adds up");
        assert!(read.open.is_empty());
        assert!(
            read.outcomes
                .iter()
                .all(|o| matches!(o, Some(Err(e)) if e.is_transient()))
        );
        for odd in [
            doc! {"n": 4, "ok": 1},
            doc! {"ok": 1},
            doc! {"n": 0, "ok": 1, "writeErrors": [{"index": 7, "code": 2}]},
        ] {
            assert!(read_reply(&odd, 3).is_err(), "{odd}");
        }
    }

    #[test]
    fn a_statement_is_judged_by_the_token_of_the_version_it_wrote() {
        let mut before = sample_job("group-judge", 1);
        before.version = 4;
        let stored = stored_at(&before, 7, 3..=7);
        assert_eq!(judge(Some(&stored), &before, "t5"), Judged::Won);
        assert_eq!(judge(Some(&stored), &before, "mine"), Judged::Lost);
        let behind = stored_at(&before, 4, 1..=4);
        assert_eq!(judge(Some(&behind), &before, "mine"), Judged::Lost);
    }

    #[test]
    fn a_version_written_without_a_token_was_not_this_statement() {
        let mut before = sample_job("group-untokened", 1);
        before.version = 4;
        // Version 5 was written by a plain compare-and-set, which keeps no token.
        let mut stored = stored_at(&before, 7, 6..=7);
        stored.tokens.insert(0, (3, "t3".into()));
        assert_eq!(judge(Some(&stored), &before, "mine"), Judged::Lost);
        let short = stored_at(&before, 7, 6..=7);
        assert_eq!(judge(Some(&short), &before, "mine"), Judged::Lost);
    }

    #[test]
    fn a_token_pushed_off_a_full_list_or_a_run_gone_is_unknown() {
        let mut before = sample_job("group-unknown", 1);
        before.version = 4;
        let overrun = stored_at(&before, 20, 13..=20);
        assert_eq!(judge(Some(&overrun), &before, "t5"), Judged::Unknown);
        assert_eq!(judge(None, &before, "t5"), Judged::Unknown);
        let mut other_run = stored_at(&before, 7, 3..=7);
        other_run.run_id = "another".into();
        assert_eq!(judge(Some(&other_run), &before, "t5"), Judged::Unknown);
    }

    #[test]
    fn the_count_settles_what_the_read_cannot_tell_when_it_leaves_one_answer() {
        use Judged::{Lost, Unknown, Won};
        let outcomes = |judged: &[Judged], won| {
            settle(judged, won)
                .into_iter()
                .map(|o| o.ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            outcomes(&[Won, Lost, Unknown], 1),
            [Some(true), Some(false), Some(false)]
        );
        assert_eq!(
            outcomes(&[Won, Unknown, Unknown], 3),
            [Some(true), Some(true), Some(true)]
        );
        assert_eq!(
            outcomes(&[Won, Unknown, Unknown], 2),
            [Some(true), None, None]
        );
    }
}
