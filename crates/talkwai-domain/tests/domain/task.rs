//! `task.*` commands and the task lifecycle.

use talkwai_domain::enums::{
    AdminRole, AgentStatus, MemberRole, MemberStatus, TaskPriority, TaskStatus, TaskType,
};
use talkwai_domain::ids::TaskId;
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::task::{
    AssignTask, CompleteTask, CreateTask, EndTask, FailTask, LinkAgent, SetTaskMetadata, Task,
    TaskAgentLinked, TaskAssigned, TaskCommand, TaskCompleted, TaskCreated, TaskEnded, TaskEvent,
    TaskFailed, TaskMetadataSet, TaskOutcome, TaskUpdated, UpdateTask,
};
use talkwai_domain::values::{DurationSecs, OutcomeSummary, Timestamp, TranscriptRef};
use talkwai_domain::{AggregateState, Command, ErrorCode, Event, Facts};

use crate::fixtures::*;
use crate::scenario::Scenario;

const T1: Timestamp = Timestamp(T0.0 + 1_000);
const T2: Timestamp = Timestamp(T0.0 + 2_000);

fn id() -> TaskId {
    task_id(1)
}

fn created() -> Event {
    Event::Task(TaskEvent::Created(TaskCreated {
        task_type: TaskType::Call,
        status: TaskStatus::Pending,
        priority: TaskPriority::High,
        from_address: addr("+15550001111"),
        to_address: addr("+15550002222"),
        subject: Some(subject("call back")),
        content: None,
        metadata: None,
        scheduled_at: Some(T2),
        agent: None,
        assigned_to: None,
        created_by: None,
        created_by_admin: None,
        at: T0,
    }))
}

fn ev(e: TaskEvent) -> Event {
    Event::Task(e)
}

fn started() -> Event {
    ev(TaskEvent::Started(Stamp { at: T1 }))
}

/// Histories reaching each status (two ways to be failed).
fn history(status: &str) -> Vec<Event> {
    match status {
        "pending" => vec![created()],
        "in_progress" => vec![created(), started()],
        "completed" => vec![
            created(),
            started(),
            ev(TaskEvent::Completed(TaskCompleted {
                outcome: None,
                at: T2,
            })),
        ],
        "failed" => vec![
            created(),
            started(),
            ev(TaskEvent::Failed(TaskFailed {
                reason: None,
                outcome: None,
                at: T2,
            })),
        ],
        "cancelled" => vec![
            created(),
            ev(TaskEvent::Cancelled(TaskEnded {
                reason: None,
                at: T2,
            })),
        ],
        other => panic!("no history for {other}"),
    }
}

const STATUSES: [&str; 5] = ["pending", "in_progress", "completed", "failed", "cancelled"];

fn cmd(c: TaskCommand) -> Command {
    Command::Task(c)
}

fn by_id() -> ById<TaskId> {
    ById { id: id() }
}

fn complete() -> CompleteTask {
    CompleteTask {
        id: id(),
        outcome: None,
    }
}

fn fail() -> FailTask {
    FailTask {
        id: id(),
        reason: Some(reason("no answer")),
        outcome: None,
    }
}

fn end() -> EndTask {
    EndTask {
        id: id(),
        reason: Some(reason("no answer")),
    }
}

fn task_of(state: &AggregateState) -> &Task {
    match state {
        AggregateState::Task(_, _, s) => s.live().expect("task is live"),
        other => panic!("not a task: {other:?}"),
    }
}

fn facts() -> Facts {
    let mut facts = facts_a();
    for (n, status) in [
        (1, AgentStatus::Active),
        (2, AgentStatus::Inactive),
        (3, AgentStatus::Training),
    ] {
        facts
            .agents
            .insert(agent_id(n), agent_entity(agent_id(n), tenant_a(), status));
    }
    facts.agents.insert(
        agent_id(4),
        agent_entity(agent_id(4), tenant_b(), AgentStatus::Active),
    );
    for (n, status) in [(1, MemberStatus::Active), (2, MemberStatus::Inactive)] {
        facts.members.insert(
            member_id(n),
            member_entity(member_id(n), tenant_a(), MemberRole::User, status),
        );
    }
    facts.members.insert(
        member_id(4),
        member_entity(
            member_id(4),
            tenant_b(),
            MemberRole::User,
            MemberStatus::Active,
        ),
    );
    facts
}

fn create_body() -> CreateTask {
    CreateTask {
        id: id(),
        tenant: None,
        task_type: TaskType::Email,
        priority: None,
        from_address: addr("Support@Acme.com"),
        to_address: addr("+1 (555) 000-2222"),
        subject: None,
        content: None,
        metadata: None,
        scheduled_at: None,
        agent: None,
        assigned_to: None,
    }
}

fn create(body: CreateTask) -> Command {
    cmd(TaskCommand::Create(body))
}

fn expected_created(body: &CreateTask) -> TaskCreated {
    TaskCreated {
        task_type: body.task_type,
        status: TaskStatus::Pending,
        priority: body.priority.unwrap_or(TaskPriority::Medium),
        from_address: body.from_address.clone(),
        to_address: body.to_address.clone(),
        subject: body.subject.clone(),
        content: body.content.clone(),
        metadata: body.metadata.clone(),
        scheduled_at: body.scheduled_at,
        agent: body.agent,
        assigned_to: body.assigned_to,
        created_by: None,
        created_by_admin: None,
        at: NOW,
    }
}

fn update() -> UpdateTask {
    UpdateTask {
        id: id(),
        task_type: None,
        priority: None,
        from_address: None,
        to_address: None,
        subject: None,
        content: None,
        scheduled_at: None,
    }
}

fn link_agent(n: u128) -> Command {
    cmd(TaskCommand::LinkAgent(LinkAgent {
        id: id(),
        agent: agent_id(n),
    }))
}

fn assign(n: u128) -> Command {
    cmd(TaskCommand::Assign(AssignTask {
        id: id(),
        assigned_to: member_id(n),
    }))
}

fn all_commands() -> Vec<Command> {
    vec![
        cmd(TaskCommand::Update(UpdateTask {
            priority: Some(TaskPriority::Low),
            ..update()
        })),
        cmd(TaskCommand::SetMetadata(SetTaskMetadata {
            id: id(),
            metadata: Some(json(r#"{"k":1}"#)),
        })),
        link_agent(1),
        cmd(TaskCommand::UnlinkAgent(by_id())),
        assign(1),
        cmd(TaskCommand::Unassign(by_id())),
        cmd(TaskCommand::Start(by_id())),
        cmd(TaskCommand::Complete(complete())),
        cmd(TaskCommand::Fail(fail())),
        cmd(TaskCommand::Cancel(end())),
        cmd(TaskCommand::Retry(by_id())),
        cmd(TaskCommand::Delete(by_id())),
        cmd(TaskCommand::EraseContent(by_id())),
    ]
}

// ---- create ----

#[test]
fn create_minimal_defaults_priority_to_medium() {
    let body = create_body();
    let expected = expected_created(&body);
    Scenario::empty(task_ref(id()))
        .with_facts(facts())
        .when(create(body))
        .then_events([ev(TaskEvent::Created(expected))])
        .then_guards([])
        .then_state(|s| {
            let t = task_of(s);
            assert_eq!(t.status, TaskStatus::Pending);
            assert_eq!(t.from_address.as_str(), "support@acme.com");
            assert_eq!(t.to_address.as_str(), "+15550002222");
            assert_eq!((t.started_at, t.completed_at), (None, None));
            assert_eq!((t.created_at, t.updated_at), (NOW, NOW));
            assert_eq!(t.tenant, tenant_a());
        });
}

#[test]
fn create_with_links_and_details() {
    let body = CreateTask {
        tenant: Some(tenant_a()),
        priority: Some(TaskPriority::Urgent),
        subject: Some(subject("renewal")),
        content: Some(content("hello")),
        metadata: Some(json(r#"{"crm":"42"}"#)),
        scheduled_at: Some(T2),
        agent: Some(agent_id(3)), // training agents may take tasks
        assigned_to: Some(member_id(1)),
        ..create_body()
    };
    let expected = expected_created(&body);
    Scenario::empty(task_ref(id()))
        .with_facts(facts())
        .when(create(body))
        .then_events([ev(TaskEvent::Created(expected))]);
}

#[test]
fn create_records_the_creator_from_the_actor() {
    let body = create_body();
    let by_member = TaskCreated {
        created_by: Some(member_id(1)),
        ..expected_created(&body)
    };
    Scenario::empty(task_ref(id()))
        .with_facts(facts())
        .as_actor(member_actor(member_id(1), tenant_a(), MemberRole::User))
        .when(create(body.clone()))
        .then_events([ev(TaskEvent::Created(by_member))]);
    let by_admin = TaskCreated {
        created_by_admin: Some(admin_id(0x99)),
        ..expected_created(&body)
    };
    Scenario::empty(task_ref(id()))
        .with_facts(facts())
        .as_actor(admin_actor(AdminRole::Support, None))
        .when(create(body))
        .then_events([ev(TaskEvent::Created(by_admin))]);
}

#[test]
fn create_rejections() {
    let run = |body: CreateTask, f: Facts| {
        Scenario::empty(task_ref(id()))
            .with_facts(f)
            .when(create(body))
    };
    run(
        CreateTask {
            agent: Some(agent_id(9)),
            ..create_body()
        },
        facts(),
    )
    .then_error(ErrorCode::NotFound, Some("agent"));
    run(
        CreateTask {
            agent: Some(agent_id(4)),
            ..create_body()
        },
        facts(),
    )
    .then_error(ErrorCode::NotFound, Some("agent"));
    run(
        CreateTask {
            agent: Some(agent_id(2)),
            ..create_body()
        },
        facts(),
    )
    .then_error(ErrorCode::InvalidReference, Some("agent"));
    run(
        CreateTask {
            assigned_to: Some(member_id(9)),
            ..create_body()
        },
        facts(),
    )
    .then_error(ErrorCode::NotFound, Some("assignedTo"));
    run(
        CreateTask {
            assigned_to: Some(member_id(4)),
            ..create_body()
        },
        facts(),
    )
    .then_error(ErrorCode::NotFound, Some("assignedTo"));
    run(
        CreateTask {
            assigned_to: Some(member_id(2)),
            ..create_body()
        },
        facts(),
    )
    .then_error(ErrorCode::InvalidReference, Some("assignedTo"));
    run(
        CreateTask {
            tenant: Some(tenant_b()),
            ..create_body()
        },
        facts(),
    )
    .then_error(ErrorCode::ValidationFailed, Some("tenant"));
    run(create_body(), Facts::default()).then_error(ErrorCode::NotFound, Some("tenant"));
    for given in [vec![created()], {
        let mut h = history("completed");
        h.push(ev(TaskEvent::Deleted(Stamp { at: T2 })));
        h
    }] {
        Scenario::given(task_ref(id()), given)
            .with_facts(facts())
            .when(create(create_body()))
            .then_error(ErrorCode::AlreadyExists, Some("id"));
    }
}

// ---- details ----

#[test]
fn update_emits_only_changes_and_null_clears() {
    Scenario::given(task_ref(id()), [created()])
        .with_facts(facts())
        .when(cmd(TaskCommand::Update(UpdateTask {
            task_type: Some(TaskType::Call),
            priority: Some(TaskPriority::Low),
            from_address: Some(addr("+1 555 000 1111")),
            to_address: Some(addr("bob@example.com")),
            subject: Some(None),
            content: Some(Some(content("script"))),
            scheduled_at: None,
            ..update()
        })))
        .then_events([ev(TaskEvent::Updated(TaskUpdated {
            task_type: None,
            priority: Some(TaskPriority::Low),
            from_address: None,
            to_address: Some(addr("bob@example.com")),
            subject: Some(None),
            content: Some(Some(content("script"))),
            scheduled_at: None,
            at: NOW,
        }))])
        .then_state(|s| {
            let t = task_of(s);
            assert_eq!(t.subject, None, "null cleared the subject");
            assert_eq!(t.scheduled_at, Some(T2), "absent kept the schedule");
            assert_eq!(t.updated_at, NOW);
        });
}

#[test]
fn update_no_op_and_status_rules() {
    Scenario::given(task_ref(id()), [created()])
        .with_facts(facts())
        .when(cmd(TaskCommand::Update(UpdateTask {
            subject: Some(Some(subject("call back"))),
            content: Some(None),
            ..update()
        })))
        .then_no_events();
    for status in ["in_progress", "failed", "cancelled"] {
        Scenario::given(task_ref(id()), history(status))
            .with_facts(facts())
            .when(all_commands()[0].clone())
            .then_events([ev(TaskEvent::Updated(TaskUpdated {
                task_type: None,
                priority: Some(TaskPriority::Low),
                from_address: None,
                to_address: None,
                subject: None,
                content: None,
                scheduled_at: None,
                at: NOW,
            }))]);
    }
}

#[test]
fn set_metadata_in_every_status_including_completed() {
    for status in STATUSES {
        Scenario::given(task_ref(id()), history(status))
            .with_facts(facts())
            .when(all_commands()[1].clone())
            .then_events([ev(TaskEvent::MetadataSet(TaskMetadataSet {
                metadata: Some(json(r#"{"k":1}"#)),
                at: NOW,
            }))]);
    }
    let with_meta = [
        created(),
        ev(TaskEvent::MetadataSet(TaskMetadataSet {
            metadata: Some(json(r#"{"k":1}"#)),
            at: T1,
        })),
    ];
    Scenario::given(task_ref(id()), with_meta.clone())
        .with_facts(facts())
        .when(all_commands()[1].clone())
        .then_no_events();
    Scenario::given(task_ref(id()), with_meta)
        .with_facts(facts())
        .when(cmd(TaskCommand::SetMetadata(SetTaskMetadata {
            id: id(),
            metadata: None,
        })))
        .then_events([ev(TaskEvent::MetadataSet(TaskMetadataSet {
            metadata: None,
            at: NOW,
        }))])
        .then_state(|s| assert_eq!(task_of(s).metadata, None));
}

#[test]
fn completed_is_final_for_details_and_links() {
    let given = {
        let mut h = vec![
            created(),
            ev(TaskEvent::AgentLinked(TaskAgentLinked {
                agent: agent_id(1),
                at: T0,
            })),
            ev(TaskEvent::Assigned(TaskAssigned {
                assigned_to: member_id(1),
                previous: None,
                at: T0,
            })),
        ];
        h.extend(history("completed").into_iter().skip(1));
        h
    };
    for c in [
        all_commands()[0].clone(),
        link_agent(3),
        cmd(TaskCommand::UnlinkAgent(by_id())),
        assign(1),
        cmd(TaskCommand::Unassign(by_id())),
    ] {
        Scenario::given(task_ref(id()), given.clone())
            .with_facts(facts())
            .when(c)
            .then_error(ErrorCode::InvalidTransition, None);
    }
}

// ---- links ----

#[test]
fn link_and_unlink_agent() {
    Scenario::given(task_ref(id()), [created()])
        .with_facts(facts())
        .when(link_agent(1))
        .then_events([ev(TaskEvent::AgentLinked(TaskAgentLinked {
            agent: agent_id(1),
            at: NOW,
        }))])
        .then_state(|s| assert_eq!(task_of(s).agent, Some(agent_id(1))));
    let linked = [
        created(),
        ev(TaskEvent::AgentLinked(TaskAgentLinked {
            agent: agent_id(1),
            at: T1,
        })),
    ];
    Scenario::given(task_ref(id()), linked.clone())
        .with_facts(facts())
        .when(link_agent(1))
        .then_no_events();
    Scenario::given(task_ref(id()), linked.clone())
        .with_facts(facts())
        .when(link_agent(3))
        .then_events([ev(TaskEvent::AgentLinked(TaskAgentLinked {
            agent: agent_id(3),
            at: NOW,
        }))]);
    Scenario::given(task_ref(id()), linked)
        .with_facts(facts())
        .when(cmd(TaskCommand::UnlinkAgent(by_id())))
        .then_events([ev(TaskEvent::AgentUnlinked(Stamp { at: NOW }))])
        .then_state(|s| assert_eq!(task_of(s).agent, None));
    Scenario::given(task_ref(id()), [created()])
        .with_facts(facts())
        .when(cmd(TaskCommand::UnlinkAgent(by_id())))
        .then_no_events();
    for (n, code) in [
        (9, ErrorCode::NotFound),
        (4, ErrorCode::NotFound),
        (2, ErrorCode::InvalidReference),
    ] {
        Scenario::given(task_ref(id()), [created()])
            .with_facts(facts())
            .when(link_agent(n))
            .then_error(code, Some("agent"));
    }
}

#[test]
fn assign_and_unassign() {
    let mut f = facts();
    f.members.insert(
        member_id(3),
        member_entity(
            member_id(3),
            tenant_a(),
            MemberRole::Manager,
            MemberStatus::Active,
        ),
    );
    Scenario::given(task_ref(id()), [created()])
        .with_facts(f.clone())
        .when(assign(1))
        .then_events([ev(TaskEvent::Assigned(TaskAssigned {
            assigned_to: member_id(1),
            previous: None,
            at: NOW,
        }))]);
    let assigned = [
        created(),
        ev(TaskEvent::Assigned(TaskAssigned {
            assigned_to: member_id(1),
            previous: None,
            at: T1,
        })),
    ];
    Scenario::given(task_ref(id()), assigned.clone())
        .with_facts(f.clone())
        .when(assign(3))
        .then_events([ev(TaskEvent::Assigned(TaskAssigned {
            assigned_to: member_id(3),
            previous: Some(member_id(1)),
            at: NOW,
        }))])
        .then_state(|s| assert_eq!(task_of(s).assigned_to, Some(member_id(3))));
    Scenario::given(task_ref(id()), assigned.clone())
        .with_facts(f.clone())
        .when(assign(1))
        .then_no_events();
    Scenario::given(task_ref(id()), assigned)
        .with_facts(f.clone())
        .when(cmd(TaskCommand::Unassign(by_id())))
        .then_events([ev(TaskEvent::Unassigned(Stamp { at: NOW }))])
        .then_state(|s| assert_eq!(task_of(s).assigned_to, None));
    Scenario::given(task_ref(id()), [created()])
        .with_facts(f.clone())
        .when(cmd(TaskCommand::Unassign(by_id())))
        .then_no_events();
    for (n, code) in [
        (9, ErrorCode::NotFound),
        (4, ErrorCode::NotFound),
        (2, ErrorCode::InvalidReference),
    ] {
        Scenario::given(task_ref(id()), [created()])
            .with_facts(f.clone())
            .when(assign(n))
            .then_error(code, Some("assignedTo"));
    }
}

// ---- lifecycle ----

/// Every lifecycle command from every status: the allowed ones produce their event and set the
/// timestamps as `task.rs` documents; the others are `invalid_transition`.
#[test]
fn lifecycle_matrix() {
    let commands = [
        ("start", cmd(TaskCommand::Start(by_id()))),
        ("complete", cmd(TaskCommand::Complete(complete()))),
        ("fail", cmd(TaskCommand::Fail(fail()))),
        ("cancel", cmd(TaskCommand::Cancel(end()))),
        ("retry", cmd(TaskCommand::Retry(by_id()))),
    ];
    for status in STATUSES {
        for (action, command) in &commands {
            let outcome = Scenario::given(task_ref(id()), history(status))
                .with_facts(facts())
                .when(command.clone());
            // (event, status after, startedAt after, completedAt after)
            let allowed = match (status, *action) {
                ("pending", "start") => Some((
                    TaskEvent::Started(Stamp { at: NOW }),
                    TaskStatus::InProgress,
                    Some(NOW),
                    None,
                )),
                ("in_progress", "complete") => Some((
                    TaskEvent::Completed(TaskCompleted {
                        outcome: None,
                        at: NOW,
                    }),
                    TaskStatus::Completed,
                    Some(T1),
                    Some(NOW),
                )),
                ("in_progress", "fail") => Some((
                    TaskEvent::Failed(TaskFailed {
                        reason: Some(reason("no answer")),
                        outcome: None,
                        at: NOW,
                    }),
                    TaskStatus::Failed,
                    Some(T1),
                    Some(NOW),
                )),
                ("pending", "cancel") => Some((
                    TaskEvent::Cancelled(TaskEnded {
                        reason: Some(reason("no answer")),
                        at: NOW,
                    }),
                    TaskStatus::Failed,
                    None,
                    Some(NOW),
                )),
                ("failed" | "cancelled", "retry") => Some((
                    TaskEvent::Retried(Stamp { at: NOW }),
                    TaskStatus::Pending,
                    None,
                    None,
                )),
                _ => None,
            };
            match allowed {
                Some((event, after, started_at, completed_at)) => {
                    outcome.then_events([ev(event)]).then_state(|s| {
                        let t = task_of(s);
                        assert_eq!(
                            (t.status, t.started_at, t.completed_at, t.updated_at),
                            (after, started_at, completed_at, NOW),
                            "{action} from {status}"
                        );
                    });
                }
                None => {
                    let e = outcome.then_error(ErrorCode::InvalidTransition, None);
                    let shown = if status == "cancelled" {
                        "failed"
                    } else {
                        status
                    };
                    assert_eq!(
                        e.to_string(),
                        format!("cannot {action} a task that is {shown}")
                    );
                }
            }
        }
    }
}

#[test]
fn a_retried_task_runs_again() {
    let mut given = history("failed");
    given.push(ev(TaskEvent::Retried(Stamp { at: T2 })));
    let later = Timestamp(NOW.0 + 60_000);
    Scenario::given(task_ref(id()), given)
        .with_facts(facts())
        .at(later)
        .when(cmd(TaskCommand::Start(by_id())))
        .then_events([ev(TaskEvent::Started(Stamp { at: later }))])
        .then_state(|s| {
            let t = task_of(s);
            assert_eq!((t.started_at, t.completed_at), (Some(later), None));
        });
}

#[test]
fn delete_from_any_status_then_every_command_is_not_found() {
    for status in STATUSES {
        let outcome = Scenario::given(task_ref(id()), history(status))
            .with_facts(facts())
            .when(cmd(TaskCommand::Delete(by_id())))
            .then_events([ev(TaskEvent::Deleted(Stamp { at: NOW }))]);
        assert!(!outcome.state().is_live());
        let mut deleted = history(status);
        deleted.push(ev(TaskEvent::Deleted(Stamp { at: T2 })));
        for c in all_commands() {
            Scenario::given(task_ref(id()), deleted.clone())
                .with_facts(facts())
                .when(c)
                .then_error(ErrorCode::NotFound, None);
        }
    }
    for c in all_commands() {
        Scenario::empty(task_ref(id()))
            .with_facts(facts())
            .when(c)
            .then_error(ErrorCode::NotFound, None);
    }
}

// ---- outcome ----

fn outcome(summary: &str) -> TaskOutcome {
    TaskOutcome {
        summary: OutcomeSummary::parse(summary).expect("summary"),
        duration_secs: Some(DurationSecs::parse(42.5).expect("duration")),
        transcript_ref: Some(TranscriptRef::parse("s3://calls/1.txt").expect("ref")),
    }
}

/// `task.complete` and `task.fail` store the reported outcome in their event and the task;
/// a retry clears it (it described the attempt that ended).
#[test]
fn complete_and_fail_record_the_outcome_and_retry_clears_it() {
    Scenario::given(task_ref(id()), history("in_progress"))
        .with_facts(facts())
        .when(cmd(TaskCommand::Complete(CompleteTask {
            id: id(),
            outcome: Some(outcome("booked the appointment")),
        })))
        .then_events([ev(TaskEvent::Completed(TaskCompleted {
            outcome: Some(outcome("booked the appointment")),
            at: NOW,
        }))])
        .then_state(|s| {
            assert_eq!(task_of(s).outcome, Some(outcome("booked the appointment")));
        });

    Scenario::given(task_ref(id()), history("in_progress"))
        .with_facts(facts())
        .when(cmd(TaskCommand::Fail(FailTask {
            outcome: Some(outcome("no answer after 3 rings")),
            ..fail()
        })))
        .then_events([ev(TaskEvent::Failed(TaskFailed {
            reason: Some(reason("no answer")),
            outcome: Some(outcome("no answer after 3 rings")),
            at: NOW,
        }))])
        .then_state(|s| {
            assert_eq!(task_of(s).outcome, Some(outcome("no answer after 3 rings")));
        });
    let mut history = history("in_progress");
    history.push(ev(TaskEvent::Failed(TaskFailed {
        reason: None,
        outcome: Some(outcome("no answer after 3 rings")),
        at: T2,
    })));
    Scenario::given(task_ref(id()), history)
        .with_facts(facts())
        .when(cmd(TaskCommand::Retry(by_id())))
        .then_events([ev(TaskEvent::Retried(Stamp { at: NOW }))])
        .then_state(|s| assert_eq!(task_of(s).outcome, None));
}

/// An outcome is validated like every other input: a summary over its bound, a negative or
/// non-numeric duration and an unknown field are refused with the offending path.
#[test]
fn outcome_values_are_bounded() {
    let too_long = "x".repeat(OutcomeSummary::MAX_CHARS + 1);
    let e = OutcomeSummary::parse(&too_long).expect_err("too long");
    assert!(e.0.contains("at most 4000"), "{e:?}");
    assert!(DurationSecs::parse(-1.0).is_err());
    assert!(DurationSecs::parse(f64::NAN).is_err());
    assert!(DurationSecs::parse(0.0).is_ok());
    let long_ref = "r".repeat(TranscriptRef::MAX_CHARS + 1);
    assert!(TranscriptRef::parse(&long_ref).is_err());
    for bad in [
        serde_json::json!({"summary": too_long}),
        serde_json::json!({"summary": "ok", "durationSecs": -3}),
        serde_json::json!({"summary": "ok", "durationSecs": "ten"}),
        serde_json::json!({"summary": "ok", "transcriptRef": long_ref}),
        serde_json::json!({"summary": "ok", "colour": "red"}),
        serde_json::json!({"durationSecs": 3}),
    ] {
        assert!(
            serde_json::from_value::<TaskOutcome>(bad.clone()).is_err(),
            "{bad} must be refused"
        );
    }
}
