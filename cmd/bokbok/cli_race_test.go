//go:build race

package main

func init() { cliRace = true }
