// Package ocapbridge makes the actors of package ocap reachable over
// OCapN, and OCapN peers' objects reachable from ocap actors, so that an
// actor spawned once can be offered on bokbok's own capability protocol
// (an ocap.Node) and to OCapN peers (an ocapn.Node) at the same time.
//
// A Bridge joins one ocapn.Node and one ocap.Vat. Bridge.Export turns an
// ocap.Ref into an ocapn.Object (register it under a swiss number with
// ocapn.Node.Register); Bridge.Import turns an OCapN reference or promise
// into an ocap.Ref that actors can send to.
//
// # Messages
//
// OCapN has no method names: by the convention of Goblins' methods, a
// message whose first argument is a symbol is a call of the method of
// that name with the other arguments. The bridge follows it both ways: an
// OCapN message ['make-car "Explorist" "blue"] is ocap's
// Send("make-car", "Explorist", "blue"), and an ocap Send("hear", x)
// through an imported reference is the OCapN message ['hear x]. A message
// whose first argument is not a symbol is sent to the ocap method ""; an
// ocap message to method "" goes out without a leading symbol.
//
// # Values
//
// ocap values are MessagePack's, OCapN's are Syrup's. The bridge maps
// them explicitly and refuses what has no counterpart (the message then
// breaks, naming what was refused):
//
//	Syrup (ocapn)                     MessagePack (ocap)
//	undefined (<void>, Go nil)        nil
//	boolean                           bool
//	integer (int64)                   int64 (any Go integer the other way;
//	                                  above MaxInt64 a *big.Int)
//	integer beyond int64 (*big.Int)   refused
//	float32, float64                  float64
//	string                            string
//	symbol                            string (so a symbol comes back as a string)
//	byte string                       []byte
//	list, set                         []any
//	dictionary with text keys         map[string]any (keys that are
//	                                  symbols become strings; a string
//	                                  and a symbol of the same text are
//	                                  refused)
//	other dictionaries, records       refused
//	*ocapn.Ref, *ocapn.Promise,
//	ocapn.Object                      ocap.Ref (a proxy actor in the
//	                                  bridge's vat, see Import)
//	an exported actor, coming back    its own ocap.Ref
//	ocap.Ref                          ocapn.Object (see Export)
//
// Nesting is bounded by syrup.MaxEncodeDepth.
//
// # Errors
//
// A broken ocap promise breaks the OCapN promise with the error's message;
// a broken OCapN promise breaks the ocap promise with the ocapn error
// (an *ocapn.BrokenError holding the peer's reason).
package ocapbridge
