package pipes

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A node written from PROTOCOL.md §21 alone, with plain maps and no type
// of this package: what it sends and reads are the documented keys.
func TestRawNodeFollowingTheProtocol(t *testing.T) {
	keys := newTestKeys("alice")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	c := rawNode(t, keys, "alice", hub.addr)
	ctx := testCtx(t, 20*time.Second)
	node := []byte("0123456789abcdef")

	var open map[string]any
	require.NoError(t, c.Invoke(ctx, "pipes.open", map[string]any{"name": "CHAT", "persistent": true, "create": true}, &open))
	assert.Equal(t, "CHAT", open["name"])
	assert.Equal(t, true, open["persistent"])
	assert.Len(t, asBytes(open["epoch"]), 16)
	for _, k := range []string{"first", "last", "max_packet", "max_batch"} {
		assert.Contains(t, open, k)
	}

	var put map[string]any
	require.NoError(t, c.Invoke(ctx, "pipes.put", map[string]any{"pipeline": "CHAT", "node": node,
		"packets": []any{map[string]any{"n": 7, "data": []byte("hello")}, map[string]any{"n": 9, "data": []byte("world")}}}, &put))
	acks := put["acks"].([]any)
	require.Len(t, acks, 2)
	assert.EqualValues(t, 1, acks[0].(map[string]any)["seq"])
	assert.EqualValues(t, 2, acks[1].(map[string]any)["seq"])
	assert.NotContains(t, acks[0], "dup", "dup is left out when false")

	require.NoError(t, c.Invoke(ctx, "pipes.put", map[string]any{"pipeline": "CHAT", "node": node,
		"packets": []any{map[string]any{"n": 9, "data": []byte("world")}}}, &put))
	ack := put["acks"].([]any)[0].(map[string]any)
	assert.Equal(t, true, ack["dup"])
	assert.EqualValues(t, 0, ack["seq"])

	var read map[string]any
	require.NoError(t, c.Invoke(ctx, "pipes.read", map[string]any{"pipeline": "CHAT", "after": 0, "max": 10, "wait": 0}, &read))
	assert.EqualValues(t, 2, read["last"])
	assert.NotContains(t, read, "gap")
	packets := read["packets"].([]any)
	require.Len(t, packets, 2)
	first := packets[0].(map[string]any)
	assert.EqualValues(t, 1, first["seq"])
	assert.Equal(t, "alice", first["sender"], "the authenticated user")
	assert.Equal(t, node, asBytes(first["node"]))
	assert.EqualValues(t, 7, first["n"])
	assert.Equal(t, []byte("hello"), asBytes(first["data"]))
	assert.Positive(t, first["time"])

	var hist map[string]any
	require.NoError(t, c.Invoke(ctx, "pipes.history", map[string]any{"pipeline": "CHAT", "newest": true, "max": 1}, &hist))
	hp := hist["packets"].([]any)
	require.Len(t, hp, 1)
	assert.EqualValues(t, 2, hp[0].(map[string]any)["seq"])
	assert.EqualValues(t, 1, hist["next"], "the next page ends at Seq 1")

	var list map[string]any
	require.NoError(t, c.Invoke(ctx, "pipes.list", map[string]any{}, &list))
	ps := list["pipelines"].([]any)
	require.Len(t, ps, 1)
	assert.Equal(t, map[string]any{"name": "CHAT", "persistent": true, "last": uint64(2)}, normalize(ps[0].(map[string]any)))
}

// asBytes returns a bin value decoded into an interface, which bokbok
// decodes as a string.
func asBytes(v any) []byte {
	switch b := v.(type) {
	case string:
		return []byte(b)
	case []byte:
		return b
	}
	return nil
}

// normalize turns the integer types a decoder may choose into uint64.
func normalize(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		switch n := v.(type) {
		case int8:
			out[k] = uint64(n)
		case int16:
			out[k] = uint64(n)
		case int32:
			out[k] = uint64(n)
		case int64:
			out[k] = uint64(n)
		case uint8:
			out[k] = uint64(n)
		case uint16:
			out[k] = uint64(n)
		case uint32:
			out[k] = uint64(n)
		default:
			out[k] = v
		}
	}
	return out
}
