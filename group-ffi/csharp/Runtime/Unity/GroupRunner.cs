// Unity glue: a MonoBehaviour that dispatches its clients' events once per frame on Unity's main thread,
// and routes the library's log lines to the Console. Compiled only inside Unity (UNITY_5_3_OR_NEWER); the
// rest of the package is plain C# 7 that any Mono host can use.
#if UNITY_5_3_OR_NEWER
using System.Collections.Generic;
using UnityEngine;

namespace Group.Unity
{
    /// <summary>Add it to a GameObject and hand it the clients you open: each frame's Update calls
    /// Client.Dispatch on each, so completions, pushes and connection events reach your handlers on the main
    /// thread, where Unity's API may be used. Disposes its clients when destroyed.</summary>
    public sealed class GroupRunner : MonoBehaviour
    {
        readonly List<Client> clients = new List<Client>();

        [Tooltip("The most verbose library log level sent to the Console (0: none).")]
        public LogLevel consoleLogLevel = LogLevel.Warn;

        /// <summary>Starts dispatching `client`'s events each frame; returns it.</summary>
        public Client Run(Client client)
        {
            clients.Add(client);
            return client;
        }

        /// <summary>Stops dispatching `client` (without disposing it).</summary>
        public void Stop(Client client) { clients.Remove(client); }

        void Awake() { RouteLogsToConsole(consoleLogLevel); }

        void Update()
        {
            for (var i = 0; i < clients.Count; i++) clients[i].Dispatch();
        }

        void OnDestroy()
        {
            foreach (var client in clients) client.Dispose();
            clients.Clear();
        }

        /// <summary>Sends the library's log lines up to maxLevel to Unity's Console (Debug.Log is callable
        /// from the library's threads).</summary>
        public static void RouteLogsToConsole(LogLevel maxLevel)
        {
            if (maxLevel == LogLevel.Off)
            {
                Log.SetCallback(null, LogLevel.Off);
                return;
            }
            Log.SetCallback((level, line) =>
            {
                if (level == LogLevel.Error) Debug.LogError("[group] " + line);
                else if (level == LogLevel.Warn) Debug.LogWarning("[group] " + line);
                else Debug.Log("[group] " + line);
            }, maxLevel);
        }
    }
}
#endif
