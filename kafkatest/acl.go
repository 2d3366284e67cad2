package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Authorization: WithACLs starts a cluster that checks every request of a
// user that is not a superuser against ACLs, as a broker with an
// authorizer does (a request nothing allows is denied). WithUser adds such
// a user with the ACLs it starts with; Grant and Revoke change ACLs while
// the cluster runs, so a test can deny a permission, watch the service
// cope, and then allow it.

// Resource is the kind of thing an ACL is about.
type Resource string

// The resources an ACL can name.
const (
	ResourceTopic           Resource = "Topic"
	ResourceGroup           Resource = "Group"
	ResourceCluster         Resource = "Cluster" // Name is ignored: there is one cluster
	ResourceTransactionalID Resource = "TransactionalId"
)

// Operation is what an ACL allows or denies on its resource, named as
// kafka-acls.sh's --operation (OpRead is "Read").
// As in Kafka, allowing Read, Write, Delete or Alter also allows Describe,
// and allowing AlterConfigs allows DescribeConfigs.
type Operation string

// The operations an ACL can name.
const (
	OpRead            Operation = "Read"
	OpWrite           Operation = "Write"
	OpCreate          Operation = "Create"
	OpDelete          Operation = "Delete"
	OpAlter           Operation = "Alter"
	OpDescribe        Operation = "Describe"
	OpClusterAction   Operation = "ClusterAction"
	OpDescribeConfigs Operation = "DescribeConfigs"
	OpAlterConfigs    Operation = "AlterConfigs"
	OpIdempotentWrite Operation = "IdempotentWrite"
	OpAll             Operation = "All"
)

// ACL allows (or, with Deny, denies) User one Operation on one resource,
// from any host. A deny wins over any allow.
type ACL struct {
	// User is the SASL user name (principal User:<User>); "*" is every user.
	User      string
	Resource  Resource
	Name      string // the topic, group or transactional id; ignored for ResourceCluster
	Prefixed  bool   // Name is a prefix: the ACL covers every resource whose name starts with it
	Operation Operation
	Deny      bool
}

// String renders the ACL as kafka-acls.sh would describe it.
func (a ACL) String() string {
	perm := "Allow"
	if a.Deny {
		perm = "Deny"
	}
	pattern := "LITERAL"
	if a.Prefixed {
		pattern = "PREFIXED"
	}
	return fmt.Sprintf("%s User:%s %s on %s:%s:%s", perm, a.User, a.Operation, a.Resource, pattern, a.name())
}

func (a ACL) name() string {
	if a.Resource == ResourceCluster {
		return "kafka-cluster"
	}
	return a.Name
}

// AllowTopic returns ACLs allowing user each of ops on topic.
func AllowTopic(user, topic string, ops ...Operation) []ACL {
	return allow(user, ResourceTopic, topic, ops)
}

// AllowGroup returns ACLs allowing user each of ops on the consumer group.
func AllowGroup(user, group string, ops ...Operation) []ACL {
	return allow(user, ResourceGroup, group, ops)
}

// AllowCluster returns ACLs allowing user each of ops on the cluster.
func AllowCluster(user string, ops ...Operation) []ACL {
	return allow(user, ResourceCluster, "", ops)
}

func allow(user string, r Resource, name string, ops []Operation) []ACL {
	out := make([]ACL, len(ops))
	for i, op := range ops {
		out[i] = ACL{User: user, Resource: r, Name: name, Operation: op}
	}
	return out
}

// WithACLs turns authorization on. Superusers (every WithSASL user, the
// Cluster's own client among them) are not bound; every other user
// (WithUser) may do only what an ACL allows. It needs WithSASL, since the
// Cluster's own client must be a superuser to create topics and ACLs.
func WithACLs() Option { return func(o *options) { o.acls = true } }

// WithUser adds a SASL user that ACLs bind, unlike WithSASL's superusers,
// allowed what acls say from the start (their User fields are ignored:
// each is for this user). mechanism is PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512. It needs WithSASL (the superuser of the Cluster's own
// client). ACLs take effect only WithACLs; without it the user may do
// anything, and giving acls is an error.
func WithUser(mechanism, user, password string, acls ...ACL) Option {
	return func(o *options) {
		o.users = append(o.users, aclUser{saslUser{strings.ToUpper(mechanism), user, password}, acls})
	}
}

type aclUser struct {
	saslUser
	acls []ACL
}

// aclOptions turns WithACLs and WithUser into kfake options.
func (o *options) aclOptions() ([]kfake.Opt, error) {
	if (o.acls || len(o.users) > 0) && len(o.sasl) == 0 {
		return nil, errors.New("kafkatest: WithACLs and WithUser need WithSASL: the Cluster's own client logs in as that superuser to create topics and ACLs")
	}
	var kopts []kfake.Opt
	for _, u := range o.users {
		if err := checkMechanism("WithUser", u.mechanism); err != nil {
			return nil, err
		}
		if len(u.acls) > 0 && !o.acls {
			return nil, fmt.Errorf("kafkatest: WithUser(%q) with ACLs, but the cluster does not check ACLs: add WithACLs", u.user)
		}
		seeds := make([]kfake.ACL, 0, len(u.acls))
		for _, a := range u.acls {
			a.User = u.user
			c, err := a.creation()
			if err != nil {
				return nil, err
			}
			seeds = append(seeds, kfake.ACL{
				Resource: c.ResourceType, Name: c.ResourceName, Pattern: c.ResourcePatternType,
				Operation: c.Operation, Allow: !a.Deny, Host: "*",
			})
		}
		kopts = append(kopts, kfake.User(u.mechanism, u.user, u.password, seeds...))
	}
	if o.acls {
		kopts = append(kopts, kfake.EnableACLs())
	}
	return kopts, nil
}

func checkMechanism(option, mechanism string) error {
	switch mechanism {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		return nil
	}
	return fmt.Errorf("kafkatest: %s(%q): the embedded broker supports PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512", option, mechanism)
}

var resourceTypes = map[Resource]kmsg.ACLResourceType{
	ResourceTopic: kmsg.ACLResourceTypeTopic, ResourceGroup: kmsg.ACLResourceTypeGroup,
	ResourceCluster: kmsg.ACLResourceTypeCluster, ResourceTransactionalID: kmsg.ACLResourceTypeTransactionalId,
}

var operations = map[Operation]kmsg.ACLOperation{
	OpRead: kmsg.ACLOperationRead, OpWrite: kmsg.ACLOperationWrite, OpCreate: kmsg.ACLOperationCreate,
	OpDelete: kmsg.ACLOperationDelete, OpAlter: kmsg.ACLOperationAlter, OpDescribe: kmsg.ACLOperationDescribe,
	OpClusterAction: kmsg.ACLOperationClusterAction, OpDescribeConfigs: kmsg.ACLOperationDescribeConfigs,
	OpAlterConfigs: kmsg.ACLOperationAlterConfigs, OpIdempotentWrite: kmsg.ACLOperationIdempotentWrite,
	OpAll: kmsg.ACLOperationAll,
}

// creation is a's CreateACLs entry, or an error naming what is wrong.
func (a ACL) creation() (kmsg.CreateACLsRequestCreation, error) {
	c := kmsg.NewCreateACLsRequestCreation()
	rt, ok := resourceTypes[a.Resource]
	if !ok {
		return c, fmt.Errorf("kafkatest: ACL %v: unknown resource %q: use ResourceTopic, ResourceGroup, ResourceCluster or ResourceTransactionalID", a, a.Resource)
	}
	op, ok := operations[a.Operation]
	if !ok {
		return c, fmt.Errorf("kafkatest: ACL %v: unknown operation %q", a, a.Operation)
	}
	if a.User == "" {
		return c, fmt.Errorf("kafkatest: ACL %v: no User: name the SASL user, or \"*\" for every user", a)
	}
	if a.Resource != ResourceCluster && a.Name == "" {
		return c, fmt.Errorf("kafkatest: ACL %v: no Name: name the %s", a, a.Resource)
	}
	c.ResourceType, c.ResourceName, c.Operation = rt, a.name(), op
	c.ResourcePatternType = kmsg.ACLResourcePatternTypeLiteral
	if a.Prefixed {
		c.ResourcePatternType = kmsg.ACLResourcePatternTypePrefixed
	}
	c.Principal, c.Host = "User:"+a.User, "*"
	c.PermissionType = kmsg.ACLPermissionTypeAllow
	if a.Deny {
		c.PermissionType = kmsg.ACLPermissionTypeDeny
	}
	return c, nil
}

// Grant adds acls while the cluster runs; requests after Grant returns
// are checked against them. The cluster must have been started WithACLs.
func (c *Cluster) Grant(ctx context.Context, acls ...ACL) error {
	if err := c.requireACLs("Grant"); err != nil {
		return err
	}
	req := kmsg.NewPtrCreateACLsRequest()
	for _, a := range acls {
		cr, err := a.creation()
		if err != nil {
			return err
		}
		req.Creations = append(req.Creations, cr)
	}
	resp, err := req.RequestWith(ctx, c.client)
	if err != nil {
		return fmt.Errorf("kafkatest: grant %v: %w", acls, err)
	}
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return fmt.Errorf("kafkatest: grant %v: %w", acls[i], err)
		}
	}
	return nil
}

// Revoke removes acls (each exactly as granted) while the cluster runs;
// requests after Revoke returns are checked without them. Removing an ACL
// that does not exist is not an error.
func (c *Cluster) Revoke(ctx context.Context, acls ...ACL) error {
	if err := c.requireACLs("Revoke"); err != nil {
		return err
	}
	req := kmsg.NewPtrDeleteACLsRequest()
	for _, a := range acls {
		cr, err := a.creation()
		if err != nil {
			return err
		}
		f := kmsg.NewDeleteACLsRequestFilter()
		f.ResourceType, f.ResourceName, f.ResourcePatternType = cr.ResourceType, &cr.ResourceName, cr.ResourcePatternType
		f.Principal, f.Host = &cr.Principal, &cr.Host
		f.Operation, f.PermissionType = cr.Operation, cr.PermissionType
		req.Filters = append(req.Filters, f)
	}
	resp, err := req.RequestWith(ctx, c.client)
	if err != nil {
		return fmt.Errorf("kafkatest: revoke %v: %w", acls, err)
	}
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return fmt.Errorf("kafkatest: revoke %v: %w", acls[i], err)
		}
	}
	return nil
}

func (c *Cluster) requireACLs(what string) error {
	if c.fake == nil {
		return fmt.Errorf("kafkatest: %s: the Cluster drives an external cluster, whose ACLs this package does not manage", what)
	}
	if !c.aclsOn {
		return fmt.Errorf("kafkatest: %s: the cluster does not check ACLs: start it WithACLs", what)
	}
	return nil
}
