//! `agent.*` commands.

use talkwai_domain::agent::{
    AgentCommand, AgentConfigured, AgentCreated, AgentEvent, AgentStatusChanged, AgentUpdated,
    ConfigureAgent, CreateAgent, SetAgentStatus, UpdateAgent,
};
use talkwai_domain::enums::{AgentStatus, AgentType};
use talkwai_domain::ids::AgentId;
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::values::JsonObject;
use talkwai_domain::{AggregateState, Command, ErrorCode, Event};

use crate::fixtures::*;
use crate::scenario::Scenario;

fn id() -> AgentId {
    agent_id(1)
}

fn created() -> Event {
    Event::Agent(AgentEvent::Created(AgentCreated {
        name: name("Voicebot"),
        description: Some(description("answers calls")),
        agent_type: AgentType::Voice,
        configuration: JsonObject::empty(),
        status: AgentStatus::Active,
        at: T0,
    }))
}

fn deleted() -> Event {
    Event::Agent(AgentEvent::Deleted(Stamp { at: T0 }))
}

fn cmd(c: AgentCommand) -> Command {
    Command::Agent(c)
}

fn create_body() -> CreateAgent {
    CreateAgent {
        id: id(),
        tenant: None,
        name: name("Voicebot"),
        description: None,
        agent_type: AgentType::Chat,
        configuration: None,
        status: None,
    }
}

fn update() -> UpdateAgent {
    UpdateAgent {
        id: id(),
        name: None,
        description: None,
    }
}

fn all_commands() -> Vec<Command> {
    vec![
        cmd(AgentCommand::Update(UpdateAgent {
            name: Some(name("Chatbot")),
            ..update()
        })),
        cmd(AgentCommand::Configure(ConfigureAgent {
            id: id(),
            configuration: json(r#"{"voice":"alloy"}"#),
        })),
        cmd(AgentCommand::SetStatus(SetAgentStatus {
            id: id(),
            status: AgentStatus::Training,
        })),
        cmd(AgentCommand::Delete(ById { id: id() })),
    ]
}

#[test]
fn create_defaults_configuration_and_status() {
    Scenario::empty(agent_ref(id()))
        .with_facts(facts_a())
        .when(cmd(AgentCommand::Create(create_body())))
        .then_events([Event::Agent(AgentEvent::Created(AgentCreated {
            name: name("Voicebot"),
            description: None,
            agent_type: AgentType::Chat,
            configuration: JsonObject::empty(),
            status: AgentStatus::Active,
            at: NOW,
        }))])
        .then_guards([])
        .then_state(|s| {
            let AggregateState::Agent(t, _, st) = s else {
                panic!("not an agent")
            };
            assert_eq!(st.live().expect("live").tenant, *t);
            assert_eq!(*t, tenant_a());
        });
}

#[test]
fn create_with_everything() {
    Scenario::empty(agent_ref(id()))
        .with_facts(facts_a())
        .when(cmd(AgentCommand::Create(CreateAgent {
            tenant: Some(tenant_a()),
            description: Some(description("beta")),
            configuration: Some(json(r#"{"model":"x"}"#)),
            status: Some(AgentStatus::Training),
            ..create_body()
        })))
        .then_events([Event::Agent(AgentEvent::Created(AgentCreated {
            name: name("Voicebot"),
            description: Some(description("beta")),
            agent_type: AgentType::Chat,
            configuration: json(r#"{"model":"x"}"#),
            status: AgentStatus::Training,
            at: NOW,
        }))]);
}

#[test]
fn create_rejections() {
    Scenario::given(agent_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(AgentCommand::Create(create_body())))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    Scenario::given(agent_ref(id()), [created(), deleted()])
        .with_facts(facts_a())
        .when(cmd(AgentCommand::Create(create_body())))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    Scenario::empty(agent_ref(id()))
        .with_facts(facts_a())
        .when(cmd(AgentCommand::Create(CreateAgent {
            tenant: Some(tenant_b()),
            ..create_body()
        })))
        .then_error(ErrorCode::ValidationFailed, Some("tenant"));
    Scenario::empty(agent_ref(id()))
        .when(cmd(AgentCommand::Create(create_body())))
        .then_error(ErrorCode::NotFound, Some("tenant"));
}

#[test]
fn update_configure_set_status() {
    let c = all_commands();
    Scenario::given(agent_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(AgentCommand::Update(UpdateAgent {
            name: Some(name("Voicebot")),
            description: Some(None),
            ..update()
        })))
        .then_events([Event::Agent(AgentEvent::Updated(AgentUpdated {
            name: None,
            description: Some(None),
            at: NOW,
        }))]);
    Scenario::given(agent_ref(id()), [created()])
        .with_facts(facts_a())
        .when(c[0].clone())
        .then_events([Event::Agent(AgentEvent::Updated(AgentUpdated {
            name: Some(name("Chatbot")),
            description: None,
            at: NOW,
        }))]);
    Scenario::given(agent_ref(id()), [created()])
        .with_facts(facts_a())
        .when(c[1].clone())
        .then_events([Event::Agent(AgentEvent::Configured(AgentConfigured {
            configuration: json(r#"{"voice":"alloy"}"#),
            at: NOW,
        }))]);
    Scenario::given(agent_ref(id()), [created()])
        .with_facts(facts_a())
        .when(c[2].clone())
        .then_events([Event::Agent(AgentEvent::StatusChanged(
            AgentStatusChanged {
                status: AgentStatus::Training,
                at: NOW,
            },
        ))]);
    Scenario::given(agent_ref(id()), [created()])
        .with_facts(facts_a())
        .when(c[3].clone())
        .then_events([Event::Agent(AgentEvent::Deleted(Stamp { at: NOW }))]);
}

#[test]
fn no_ops() {
    for c in [
        AgentCommand::Update(update()),
        AgentCommand::Update(UpdateAgent {
            name: Some(name(" Voicebot ")),
            description: Some(Some(description("answers calls"))),
            ..update()
        }),
        AgentCommand::Configure(ConfigureAgent {
            id: id(),
            configuration: JsonObject::empty(),
        }),
        AgentCommand::SetStatus(SetAgentStatus {
            id: id(),
            status: AgentStatus::Active,
        }),
    ] {
        Scenario::given(agent_ref(id()), [created()])
            .with_facts(facts_a())
            .when(cmd(c))
            .then_no_events();
    }
}

#[test]
fn every_command_on_a_missing_or_deleted_agent_is_not_found() {
    for c in all_commands() {
        Scenario::empty(agent_ref(id()))
            .with_facts(facts_a())
            .when(c.clone())
            .then_error(ErrorCode::NotFound, None);
        Scenario::given(agent_ref(id()), [created(), deleted()])
            .with_facts(facts_a())
            .when(c)
            .then_error(ErrorCode::NotFound, None);
    }
}
