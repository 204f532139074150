// Package echoapi declares the methods of examples/server and
// examples/client, once for both sides: each bokbok.Method carries its
// name with its request and reply types, so that the server's handler
// (Add.Handle(mux, f)) and the client's call (Add.Call(ctx, conn, nums))
// cannot disagree about them.
//
// A program of your own would keep such a package next to its server, for
// the server and its clients to import.
package echoapi

import (
	"fmt"
	"reflect"

	"github.com/bokbok-go/bokbok"
)

// The methods examples/server serves.
var (
	Add   = bokbok.Method[[]int64, int64]("add")     // the sum of the numbers
	Upper = bokbok.Method[string, string]("upper")   // the text in upper case
	Greet = bokbok.Method[struct{}, string]("greet") // calls the client's Name back, and greets it
	Sleep = bokbok.Method[int64, string]("sleep")    // waits that many milliseconds, or until the caller gives up
)

// Name is the method examples/client serves: the server calls it back
// while it serves Greet.
var Name = bokbok.Method[struct{}, string]("name")

// Log is a notification method of examples/server: a string for its log.
const Log = "log"

// Realm is the server's realm (bokbok.Config.Realm and Server.Realm): it
// is bound into the secure handshake, so the server and its clients must
// use the same one.
const Realm = "bokbok-echo"

// Args formats a message for the examples' logs as a list of arguments:
// a list as it is, nothing (nil, or an empty struct or map) as [], and
// any other value as a list of one, such as "add [2 3 4]", "greet []" and
// "upper [hello]".
func Args(msg any) string {
	v := reflect.ValueOf(msg)
	switch {
	case !v.IsValid(), v.Kind() == reflect.Struct && v.NumField() == 0, v.Kind() == reflect.Map && v.Len() == 0:
		return "[]"
	case v.Kind() == reflect.Slice:
		return fmt.Sprint(msg)
	}
	return fmt.Sprintf("[%v]", msg)
}
