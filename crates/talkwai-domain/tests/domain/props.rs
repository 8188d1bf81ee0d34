//! Property tests: random command sequences against one task, one admin and the members of one
//! tenant, with random actors and facts. Whatever the decider accepts applies strictly, counts
//! as versions, keeps the task lifecycle's invariants and never breaks a uniqueness guard.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;

use talkwai_domain::admin::{
    AdminCommand, CreateAdmin, SetAdminPermissions, SetAdminRole, SetAdminStatus, UpdateAdmin,
};
use talkwai_domain::enums::{
    AdminRole, AdminStatus, AgentStatus, MemberRole, MemberStatus, TaskPriority, TaskStatus,
    TaskType, TenantStatus,
};
use talkwai_domain::ids::{MemberId, TenantId};
use talkwai_domain::member::{CreateMember, LinkUser, MemberCommand, UpdateMember};
use talkwai_domain::state::ById;
use talkwai_domain::task::{
    AssignTask, CompleteTask, CreateTask, EndTask, FailTask, LinkAgent, SetTaskMetadata,
    TaskCommand, UpdateTask,
};
use talkwai_domain::values::Timestamp;
use talkwai_domain::{
    Actor, AggregateState, Command, Context, Decision, ErrorCode, Event, Facts, GuardChange,
    GuardKey, GuardState, apply, decide, evolve,
};

use crate::events::all_events;
use crate::fixtures::*;

const AGENT_STATUSES: [AgentStatus; 3] = [
    AgentStatus::Active,
    AgentStatus::Inactive,
    AgentStatus::Training,
];

/// The actors a step may run as.
fn actors() -> Vec<Actor> {
    let mut inactive = member_actor(member_id(1), tenant_a(), MemberRole::Owner);
    if let Actor::Member { active, .. } = &mut inactive {
        *active = false;
    }
    vec![
        Actor::Platform,
        admin_actor(AdminRole::Superadmin, None),
        admin_actor(AdminRole::Admin, None),
        admin_actor(AdminRole::Support, None),
        admin_actor(AdminRole::Support, Some(r#"{"deny":["task.start"]}"#)),
        admin_actor(AdminRole::Admin, Some(r#"{"allow":["admin.*"]}"#)),
        member_actor(member_id(1), tenant_a(), MemberRole::Owner),
        member_actor(member_id(1), tenant_a(), MemberRole::Manager),
        member_actor(member_id(1), tenant_a(), MemberRole::User),
        member_actor(member_id(2), tenant_a(), MemberRole::User),
        member_actor(member_id(3), tenant_b(), MemberRole::Owner),
        inactive,
    ]
}

/// Facts for one step: tenant A's status, agents 1..=3 of tenant A with random statuses,
/// agent 4 of tenant B, members 1..=3 of tenant A active or not, member 4 of tenant B.
#[derive(Debug, Clone)]
struct World {
    tenant: Option<TenantStatus>,
    agents: [AgentStatus; 3],
    members: [bool; 3],
}

fn world() -> impl Strategy<Value = World> {
    (
        prop_oneof![
            8 => Just(Some(TenantStatus::Active)),
            1 => Just(Some(TenantStatus::Suspended)),
            1 => Just(None),
        ],
        [
            select(&AGENT_STATUSES[..]),
            select(&AGENT_STATUSES[..]),
            select(&AGENT_STATUSES[..]),
        ],
        [
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
        ],
    )
        .prop_map(|(tenant, agents, members)| World {
            tenant,
            agents,
            members,
        })
}

impl World {
    fn facts(&self) -> Facts {
        let mut facts = Facts::default();
        if let Some(status) = self.tenant {
            facts
                .tenants
                .insert(tenant_a(), tenant_entity(tenant_a(), status, None));
        }
        for (i, status) in self.agents.iter().enumerate() {
            let id = agent_id(i as u128 + 1);
            facts
                .agents
                .insert(id, agent_entity(id, tenant_a(), *status));
        }
        facts.agents.insert(
            agent_id(4),
            agent_entity(agent_id(4), tenant_b(), AgentStatus::Active),
        );
        for (i, active) in self.members.iter().enumerate() {
            let id = member_id(i as u128 + 1);
            let status = if *active {
                MemberStatus::Active
            } else {
                MemberStatus::Inactive
            };
            facts
                .members
                .insert(id, member_entity(id, tenant_a(), MemberRole::User, status));
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
}

fn ref_id() -> impl Strategy<Value = u128> {
    1..=5u128
}

/// A random command on task 1 (references to agents/members 1..=5: some missing, some in
/// tenant B).
fn task_command() -> impl Strategy<Value = TaskCommand> {
    let id = task_id(1);
    let by_id = ById { id };
    prop_oneof![
        1 => (
            prop::option::of(ref_id()),
            prop::option::of(ref_id()),
            prop::option::of(select(TaskPriority::ALL))
        )
            .prop_map(move |(agent, member, priority)| TaskCommand::Create(CreateTask {
                id,
                tenant: None,
                task_type: TaskType::Call,
                priority,
                from_address: addr("+15550001111"),
                to_address: addr("+15550002222"),
                subject: None,
                content: None,
                metadata: None,
                scheduled_at: None,
                agent: agent.map(agent_id),
                assigned_to: member.map(member_id),
            })),
        1 => (
            prop::option::of(select(TaskPriority::ALL)),
            prop::option::of(prop::option::of(select(&["a", "b"][..])))
        )
            .prop_map(move |(priority, subj)| TaskCommand::Update(UpdateTask {
                id,
                task_type: None,
                priority,
                from_address: None,
                to_address: None,
                subject: subj.map(|s| s.map(subject)),
                content: None,
                scheduled_at: None,
            })),
        1 => prop::option::of(select(&[r#"{"a":1}"#, r#"{"b":2}"#][..])).prop_map(move |m| {
            TaskCommand::SetMetadata(SetTaskMetadata {
                id,
                metadata: m.map(json),
            })
        }),
        1 => ref_id().prop_map(move |n| TaskCommand::LinkAgent(LinkAgent {
            id,
            agent: agent_id(n)
        })),
        1 => Just(TaskCommand::UnlinkAgent(by_id)),
        1 => ref_id().prop_map(move |n| TaskCommand::Assign(AssignTask {
            id,
            assigned_to: member_id(n)
        })),
        1 => Just(TaskCommand::Unassign(by_id)),
        3 => Just(TaskCommand::Start(by_id)),
        3 => Just(TaskCommand::Complete(CompleteTask { id, outcome: None })),
        3 => any::<bool>().prop_map(move |r| TaskCommand::Fail(FailTask {
            id,
            reason: r.then(|| reason("busy")),
            outcome: None,
        })),
        3 => Just(TaskCommand::Cancel(EndTask { id, reason: None })),
        3 => Just(TaskCommand::Retry(by_id)),
        1 => Just(TaskCommand::Delete(by_id)),
    ]
}

/// Every rejection is one of the codes the domain produces.
fn domain_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ValidationFailed
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::InvalidTransition
            | ErrorCode::InvalidReference
            | ErrorCode::Forbidden
    )
}

/// Runs one decision against `state`: rejected decisions leave it alone, accepted ones must
/// apply strictly, in order, one version each. Returns the accepted decision.
fn step(
    state: &mut AggregateState,
    history: &mut Vec<Event>,
    command: Command,
    actor: &Actor,
    facts: &Facts,
    now: Timestamp,
) -> Result<Decision<Event>, TestCaseError> {
    let ctx = Context {
        now,
        actor,
        tenant: if command.is_platform() {
            None
        } else {
            state.target().tenant
        },
        facts,
        nonce: NONCE,
    };
    let before = state.clone();
    match decide(state, command.clone(), &ctx) {
        Err(e) => {
            prop_assert!(domain_code(e.code()), "unexpected code {}", e.code());
            prop_assert_eq!(&*state, &before);
            Ok(Decision::none())
        }
        Ok(decision) => {
            for event in &decision.events {
                let version = state.version();
                if let Err(e) = apply(state, event) {
                    return Err(TestCaseError::fail(format!(
                        "decided event does not apply: {e}\ncommand: {command:?}\nevent: {event:?}\nstate: {before:?}"
                    )));
                }
                prop_assert_eq!(state.version(), version + 1);
                history.push(event.clone());
            }
            // (d) the version is the number of applied events
            prop_assert_eq!(state.version(), history.len() as u64);
            Ok(decision)
        }
    }
}

/// How the task last became `failed` (to know whether `startedAt` must be set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailedBy {
    Fail,
    Cancel,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (b) (c) (d) for one task.
    #[test]
    fn task_histories_keep_the_lifecycle_invariants(
        steps in prop::collection::vec(
            (task_command(), 0..actors().len(), world()),
            1..60,
        )
    ) {
        let actors = actors();
        let mut state = AggregateState::new(task_ref(task_id(1)));
        let mut history = Vec::new();
        let mut completed_once = false;
        let mut failed_by = None;
        let mut now = T0;
        for (command, actor, world) in steps {
            now = Timestamp(now.0 + 1_000);
            let decision = step(
                &mut state,
                &mut history,
                Command::Task(command),
                &actors[actor],
                &world.facts(),
                now,
            )?;
            prop_assert!(decision.guards.is_empty(), "tasks claim no guards");
            for event in &decision.events {
                if let Event::Task(e) = event {
                    match e {
                        talkwai_domain::task::TaskEvent::Failed(_) => failed_by = Some(FailedBy::Fail),
                        talkwai_domain::task::TaskEvent::Cancelled(_) => failed_by = Some(FailedBy::Cancel),
                        _ => {}
                    }
                }
            }
            let AggregateState::Task(tenant, _, s) = &state else {
                unreachable!("a task state stays a task state")
            };
            prop_assert_eq!(*tenant, tenant_a());
            if let Some(task) = s.live() {
                prop_assert_eq!(task.tenant, tenant_a());
                if completed_once {
                    prop_assert_eq!(task.status, TaskStatus::Completed, "completed is final");
                }
                let ended = matches!(task.status, TaskStatus::Completed | TaskStatus::Failed);
                prop_assert_eq!(task.completed_at.is_some(), ended, "completedAt iff ended: {:?}", task);
                let started = match task.status {
                    TaskStatus::Pending => false,
                    TaskStatus::InProgress | TaskStatus::Completed => true,
                    TaskStatus::Failed => failed_by == Some(FailedBy::Fail),
                };
                prop_assert_eq!(task.started_at.is_some(), started, "startedAt: {:?}", task);
                if let (Some(s), Some(c)) = (task.started_at, task.completed_at) {
                    prop_assert!(s <= c);
                }
                prop_assert!(task.created_at <= task.updated_at);
                completed_once |= task.status == TaskStatus::Completed;
            }
        }
        // (a) folding the accepted history with `evolve` gives the same state
        let folded = history
            .iter()
            .fold(AggregateState::new(task_ref(task_id(1))), evolve);
        prop_assert_eq!(folded, state);
    }

    /// (a) `evolve` is total: any sequence of any events (most of which cannot follow the
    /// state) never panics, and the version counts exactly the events `apply` accepted.
    #[test]
    fn evolve_never_panics_on_arbitrary_histories(
        events in prop::collection::vec(select(all_events()), 0..80),
        kind in 0..6usize,
    ) {
        let target = [
            tenant_ref(tenant_a()),
            member_ref(member_id(1)),
            admin_ref(admin_id(1)),
            agent_ref(agent_id(1)),
            task_ref(task_id(1)),
            user_ref(user_id(1)),
        ][kind];
        let mut strict = AggregateState::new(target);
        let mut accepted = 0u64;
        let mut folded = AggregateState::new(target);
        for event in &events {
            let before = strict.clone();
            match apply(&mut strict, event) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    prop_assert_eq!(&strict, &before, "a refused event leaves the state: {}", e);
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            folded = evolve(folded, event);
            prop_assert_eq!(&folded, &strict);
        }
        prop_assert_eq!(strict.version(), accepted);
        prop_assert_eq!(strict.target(), target);
    }
}

// ---- guards ----

/// The guard subjects as the event store would hold them.
#[derive(Debug, Default)]
struct Guards(BTreeMap<GuardKey, GuardState>);

impl Guards {
    fn apply(&mut self, changes: &[GuardChange]) -> Result<(), TestCaseError> {
        for change in changes {
            let guard = self.0.entry(change.key.clone()).or_default();
            if let Err(e) = guard.apply(&change.event) {
                return Err(TestCaseError::fail(format!(
                    "guard change refused: {e}\nchange: {change:?}\nguards: {:?}",
                    self.0
                )));
            }
        }
        Ok(())
    }

    /// Loads every guard into the facts (the command service loads the ones a command needs).
    fn load(&self, facts: &mut Facts) {
        facts.guards = self.0.iter().map(|(k, g)| (k.clone(), g.owner)).collect();
    }

    fn held(&self) -> BTreeMap<GuardKey, uuid::Uuid> {
        self.0
            .iter()
            .filter_map(|(k, g)| g.owner.map(|o| (k.clone(), o)))
            .collect()
    }
}

const EMAILS: [&str; 3] = ["a@acme.com", "b@acme.com", "c@acme.com"];

#[derive(Debug, Clone)]
enum MemberOp {
    Create {
        member: u128,
        email: usize,
        user: Option<u128>,
    },
    UpdateEmail {
        member: u128,
        email: usize,
    },
    LinkUser {
        member: u128,
        user: u128,
    },
    UnlinkUser {
        member: u128,
    },
    Delete {
        member: u128,
    },
}

fn member_op() -> impl Strategy<Value = MemberOp> {
    let member = 1..=4u128;
    let email = 0..EMAILS.len();
    prop_oneof![
        3 => (member.clone(), email.clone(), prop::option::of(1..=3u128))
            .prop_map(|(member, email, user)| MemberOp::Create { member, email, user }),
        3 => (member.clone(), email).prop_map(|(member, email)| MemberOp::UpdateEmail { member, email }),
        2 => (member.clone(), 1..=3u128).prop_map(|(member, user)| MemberOp::LinkUser { member, user }),
        1 => member.clone().prop_map(|member| MemberOp::UnlinkUser { member }),
        1 => member.prop_map(|member| MemberOp::Delete { member }),
    ]
}

impl MemberOp {
    fn member(&self) -> MemberId {
        match self {
            Self::Create { member, .. }
            | Self::UpdateEmail { member, .. }
            | Self::LinkUser { member, .. }
            | Self::UnlinkUser { member }
            | Self::Delete { member } => member_id(*member),
        }
    }

    fn command(&self) -> Command {
        let id = self.member();
        Command::Member(match self {
            Self::Create { email: e, user, .. } => MemberCommand::Create(CreateMember {
                id,
                tenant: None,
                first_name: name("A"),
                last_name: name("B"),
                email: email(EMAILS[*e]),
                phone: None,
                role: MemberRole::User,
                user: user.map(user_id),
            }),
            Self::UpdateEmail { email: e, .. } => MemberCommand::Update(UpdateMember {
                id,
                first_name: None,
                last_name: None,
                email: Some(email(EMAILS[*e])),
                phone: None,
            }),
            Self::LinkUser { user, .. } => MemberCommand::LinkUser(LinkUser {
                id,
                user: user_id(*user),
            }),
            Self::UnlinkUser { .. } => MemberCommand::UnlinkUser(ById { id }),
            Self::Delete { .. } => MemberCommand::Delete(ById { id }),
        })
    }
}

fn tenant_facts(tenant: TenantId) -> Facts {
    let mut facts = facts_with([tenant_entity(tenant, TenantStatus::Active, None)]);
    for u in 1..=3 {
        facts.users.insert(user_id(u), user_entity(user_id(u)));
    }
    facts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (e) members of one tenant: guard changes always apply to the guard model (no claim of a
    /// held guard, no release by a non-holder), and the held guards are exactly the live
    /// members' emails and user links.
    #[test]
    fn member_guards_stay_unique(
        ops in prop::collection::vec((member_op(), 0..2usize), 1..60)
    ) {
        let owner = member_actor(member_id(99), tenant_a(), MemberRole::Owner);
        let actors = [Actor::Platform, owner];
        let mut guards = Guards::default();
        let mut states: BTreeMap<MemberId, (AggregateState, Vec<Event>)> = (1..=4)
            .map(|n| (member_id(n), (AggregateState::new(member_ref(member_id(n))), Vec::new())))
            .collect();
        let mut now = T0;
        for (op, actor) in ops {
            now = Timestamp(now.0 + 1);
            let mut facts = tenant_facts(tenant_a());
            guards.load(&mut facts);
            let (state, history) = states.get_mut(&op.member()).expect("member state");
            let decision = step(state, history, op.command(), &actors[actor], &facts, now)?;
            guards.apply(&decision.guards)?;

            // the guards held are exactly what the live members hold
            let mut expected = BTreeMap::new();
            for (id, (state, _)) in &states {
                if let AggregateState::Member(_, _, s) = state
                    && let Some(m) = s.live()
                {
                    let previous = expected.insert(
                        GuardKey::MemberEmail { tenant: tenant_a(), email: m.email.clone() },
                        id.0,
                    );
                    prop_assert!(previous.is_none(), "two live members share {}", m.email);
                    if let Some(user) = m.user {
                        let previous = expected.insert(GuardKey::UserMember(user), id.0);
                        prop_assert!(previous.is_none(), "two live members link {}", user);
                    }
                }
            }
            prop_assert_eq!(guards.held(), expected);
        }
    }

    /// (b) (d) and guards for one admin under random actors.
    #[test]
    fn admin_histories_apply_and_keep_guards(
        ops in prop::collection::vec((0..9usize, 0..3usize, 0..actors().len()), 1..50)
    ) {
        let actors = actors();
        let id = admin_id(1);
        let mut guards = Guards::default();
        let mut state = AggregateState::new(admin_ref(id));
        let mut history = Vec::new();
        let mut now = T0;
        for (op, pick, actor) in ops {
            now = Timestamp(now.0 + 1);
            let mail = ["g@talkwai.com", "h@talkwai.com", "i@talkwai.com"][pick];
            let command = match op {
                0 => AdminCommand::Create(CreateAdmin {
                    id,
                    first_name: name("G"),
                    last_name: name("H"),
                    email: email(mail),
                    role: AdminRole::ALL[pick],
                    permissions: None,
                    user: (pick > 0).then(|| user_id(pick as u128)),
                }),
                1 => AdminCommand::Update(UpdateAdmin {
                    id,
                    first_name: None,
                    last_name: (pick == 1).then(|| name("X")),
                    email: Some(email(mail)),
                }),
                2 => AdminCommand::SetRole(SetAdminRole { id, role: AdminRole::ALL[pick] }),
                3 => AdminCommand::SetPermissions(SetAdminPermissions {
                    id,
                    permissions: json([r#"{}"#, r#"{"deny":["task.*"]}"#, r#"{"allow":["*"]}"#][pick]),
                }),
                4 => AdminCommand::SetStatus(SetAdminStatus {
                    id,
                    status: if pick == 0 { AdminStatus::Inactive } else { AdminStatus::Active },
                }),
                5 => AdminCommand::LinkUser(LinkUser { id, user: user_id(pick as u128 + 1) }),
                6 => AdminCommand::UnlinkUser(ById { id }),
                7 => AdminCommand::Delete(ById { id }),
                _ => AdminCommand::Update(UpdateAdmin {
                    id,
                    first_name: Some(name("Y")),
                    last_name: None,
                    email: None,
                }),
            };
            let mut facts = tenant_facts(tenant_a());
            guards.load(&mut facts);
            // another admin holds one of the emails
            facts.guards.entry(GuardKey::AdminEmail(email("i@talkwai.com"))).or_insert(Some(admin_id(2).0));
            let decision = step(&mut state, &mut history, Command::Admin(command), &actors[actor], &facts, now)?;
            guards.apply(&decision.guards)?;
            let AggregateState::Admin(_, s) = &state else { unreachable!("admin state") };
            if let Some(a) = s.live() {
                prop_assert_ne!(a.email.as_str(), "i@talkwai.com", "took another admin's email");
                let held = guards.held();
                prop_assert_eq!(held.get(&GuardKey::AdminEmail(a.email.clone())), Some(&id.0));
            } else {
                prop_assert!(guards.held().values().all(|o| *o != id.0), "a dead admin holds nothing");
            }
        }
        let folded = history.iter().fold(AggregateState::new(admin_ref(id)), evolve);
        prop_assert_eq!(folded, state);
    }
}
