package cluster

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ternmq/tern/server"
)

// Moving a persistent session (server/cluster_session.go has the server's
// side): the node that won the claim asks the holder for the session in two
// rounds over request/reply on sess.<holder>; the holder deletes its copy
// only in the second round, after the first is stored here.

// sessionReq asks a node for a session.
type sessionReq struct {
	ID    string `json:"id"`
	From  uint64 `json:"from"`
	Final bool   `json:"final,omitempty"`
	Fence string `json:"fence,omitempty"` // fence.go: waited for before the final round
}

// sessionResp is the answer: the state, or why not.
type sessionResp struct {
	State *server.SessionState `json:"state,omitempty"`
	Err   string               `json:"err,omitempty"`
}

// moveSession brings id's persistent session from holder to this node.
func (n *Node) moveSession(id, holder string) error {
	first, err := n.requestSession(holder, sessionReq{ID: id})
	if err != nil {
		return err
	}
	if _, err := n.srv.ImportSession(first, false); err != nil {
		return err
	}
	// The session is subscribed here now: the old node stops taking its
	// messages only once every node sends them here too (fence.go).
	token := n.announceFence(holder)
	rest, err := n.requestSession(holder, sessionReq{ID: id, From: first.Next, Final: true, Fence: token})
	if err != nil {
		return err
	}
	n.stats.sessionsMoved.Add(1)
	dropped, err := n.srv.ImportSession(rest, true)
	n.stats.moveCopiesDropped.Add(uint64(dropped))
	return err
}

func (n *Node) requestSession(holder string, req sessionReq) (*server.SessionState, error) {
	b, _ := json.Marshal(req)
	msg, err := n.nc.Request(n.subj.session(holder), b, 10*time.Second)
	if err != nil {
		return nil, err
	}
	var resp sessionResp
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, err
	}
	if resp.Err != "" {
		return nil, errors.New(resp.Err)
	}
	if resp.State == nil {
		return nil, errors.New("empty session answer")
	}
	return resp.State, nil
}

// onSessionRequest exports a session to the node that asks (off the
// subscription's goroutine: it waits for the connection to close and for
// the store).
func (n *Node) onSessionRequest(msg *nats.Msg) {
	var req sessionReq
	if err := json.Unmarshal(msg.Data, &req); err != nil || msg.Reply == "" {
		n.stats.decodeErrors.Add(1)
		return
	}
	reply := msg.Reply
	go func() {
		if req.Final && req.Fence != "" {
			n.waitFence(req.Fence)
		}
		st, err := n.srv.ExportSession(req.ID, req.From, req.Final)
		var resp sessionResp
		if err != nil {
			resp.Err = err.Error()
		} else {
			resp.State = st
		}
		b, _ := json.Marshal(resp)
		if len(b) > maxPayload {
			b, _ = json.Marshal(sessionResp{Err: "session too large to move"})
		}
		_ = n.nc.Publish(reply, b)
	}()
}
