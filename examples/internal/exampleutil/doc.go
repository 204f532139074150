// Package exampleutil is the plumbing the example programs under examples/
// share, so that each program's main.go shows what it does with bokbok and
// ocap rather than how it reads its flags or stops on Ctrl-C.
//
// It holds:
//
//   - the key flags of the secure examples (-insecure, -user, -key,
//     -key-file and -realm): ServerKeyFlags for a server, whose Keys give
//     the bokbok.Server its UserKey (generating a key, and printing the
//     client command, when given none), and ClientKeyFlags for a client,
//     whose Keys give its *bokbok.Config and explain authentication and
//     security mode errors;
//   - SetupLog, SetUsage and NoArgs: the examples' log format and command
//     line;
//   - ConnLog, which numbers a server's connections and logs their opening
//     and closing;
//   - SignalContext, Serve and ServeNode, which serve a bokbok.Server until
//     SIGINT (Ctrl-C) or SIGTERM and then shut it down gracefully;
//   - ListenForSturdyrefs, which listens for a program that hands out
//     sturdyrefs and works out the address they carry.
//
// It is internal to the examples and no part of bokbok's API: a program of
// your own would do these things its own way.
package exampleutil
