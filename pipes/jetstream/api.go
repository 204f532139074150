package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// storedMsg is a message of a stream as the JetStream API returns it.
type storedMsg struct {
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Data    []byte `json:"data"`
}

// errNoMessage is a get that found no message.
var errNoMessage = errors.New("no message found")

// msgGet asks the stream's leader (not a replica, which may lag) for a
// message: by sequence, or the last on a subject (which may be a
// wildcard). errNoMessage if there is none.
func (l *Log) msgGet(ctx context.Context, stream string, seq uint64, lastBySubj string) (m storedMsg, err error) {
	err = l.retry(ctx, func(ctx context.Context) (err error) {
		m, err = l.msgGet1(ctx, stream, seq, lastBySubj)
		return err
	})
	return m, err
}

func (l *Log) msgGet1(ctx context.Context, stream string, seq uint64, lastBySubj string) (storedMsg, error) {
	req := struct {
		Seq     uint64 `json:"seq,omitempty"`
		LastFor string `json:"last_by_subj,omitempty"`
	}{seq, lastBySubj}
	b, _ := json.Marshal(req)
	resp, err := l.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, b)
	if err != nil {
		return storedMsg{}, err
	}
	var r struct {
		Message *storedMsg `json:"message"`
		Error   *apiError  `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return storedMsg{}, err
	}
	if r.Error != nil {
		if r.Error.ErrCode == errCodeNoMessage || r.Error.Code == 404 && r.Error.ErrCode != errCodeStreamNotFound {
			return storedMsg{}, errNoMessage
		}
		return storedMsg{}, r.Error
	}
	if r.Message == nil {
		return storedMsg{}, errNoMessage
	}
	return *r.Message, nil
}

// pubAck is JetStream's answer to a publish, or to an atomic batch's
// commit (Seq is then the batch's last message, Count its size).
type pubAck struct {
	Stream    string    `json:"stream"`
	Seq       uint64    `json:"seq"`
	Duplicate bool      `json:"duplicate"`
	Batch     string    `json:"batch"`
	Count     int       `json:"count"`
	Error     *apiError `json:"error"`
}

// Headers of JetStream publishes.
const (
	hdrExpectedLastSeq     = "Nats-Expected-Last-Sequence"
	hdrExpectedLastSubjSeq = "Nats-Expected-Last-Subject-Sequence"
	hdrBatchID             = "Nats-Batch-Id"
	hdrBatchSeq            = "Nats-Batch-Sequence"
	hdrBatchCommit         = "Nats-Batch-Commit"
	hdrSequence            = "Nats-Sequence"
)

// errConnLost is a request whose answer was lost with the connection.
var errConnLost = errors.New("jetstream: connection lost while waiting for an answer")

// publish stores msgs, all or none: one message with a plain publish,
// more as an atomic batch (the stream allows atomic publish), whose
// messages take consecutive sequences. Only the first message may carry
// expectations. It returns the ack of the last message.
//
// wait bounds the wait for the ack.
func (l *Log) publish(ctx context.Context, msgs []*nats.Msg, wait time.Duration) (pubAck, error) {
	last := msgs[len(msgs)-1]
	if len(msgs) > 1 {
		id := nats.NewInbox()[len(nats.InboxPrefix):] // unique, 22 characters
		for i, m := range msgs {
			if m.Header == nil {
				m.Header = nats.Header{}
			}
			m.Header.Set(hdrBatchID, id)
			m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
			if m == last {
				m.Header.Set(hdrBatchCommit, "1")
				break
			}
			// No reply: the server acknowledges only the commit, or
			// refuses it if a message of the batch went missing.
			if err := l.nc.PublishMsg(m); err != nil {
				return pubAck{}, err
			}
		}
	}
	// An ack is lost with the connection, or with a stream leader that
	// went away: stop waiting then, and send again (the caller's
	// expectations make that safe).
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	lost := l.connLost()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-lost:
			cancel()
		case <-stop:
		}
	}()
	resp, err := l.nc.RequestMsgWithContext(ctx, last)
	if err != nil {
		select {
		case <-lost:
			return pubAck{}, errConnLost
		default:
		}
		return pubAck{}, err
	}
	var ack pubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return pubAck{}, err
	}
	if ack.Error != nil {
		return pubAck{}, ack.Error
	}
	if len(msgs) > 1 && ack.Count != len(msgs) {
		return pubAck{}, errors.New("jetstream: batch acknowledged with the wrong count")
	}
	return ack, nil
}
